"""The frozen reference policy of fine-tuning runs: the --init_from run's language model, never trained."""
from tfpref.models import CausalLM, build_model
from tfpref.runs import restore_weights


def reference_model(config):
    """A new language model with the architecture of `config` and the backbone weights of
    --init_from's latest checkpoint (whatever heads that run had are not needed)."""
    backbone = build_model(config.model, seed=config.train.seed)
    restore_weights([backbone], config.train.init_from)
    model = CausalLM(backbone, name="reference")
    model.trainable = False
    return model
