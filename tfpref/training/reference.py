"""The frozen reference policy of fine-tuning runs: the --init_from run's model, never trained."""
from tfpref.models import build_model
from tfpref.training.checkpoints import restore_weights


def reference_model(config):
    """A new model with the architecture of `config` and the weights of --init_from's latest checkpoint."""
    model = build_model(config.model, seed=config.train.seed)
    restore_weights([model], config.train.init_from)
    model.trainable = False
    return model
