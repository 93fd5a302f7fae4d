"""Backbones (transformer, LSTM, the conv reward-model encoder), heads and task models.

`build_model(model_config)` makes the backbone a ModelConfig names; `build_task_model(config)` puts
on it what the run's objective trains (see `tfpref.models.tasks`).
"""
from tfpref.config import MAX_TRANSFORMER_SEQ_LEN
from tfpref.data.tokenizers import KerasHubTokenizer, generation_banned_ids, model_vocab_size
from tfpref.models.conv import ConvEncoder
from tfpref.models.heads import ClassifierHead, RewardHead, ScalarHead
from tfpref.models.keras_hub import KerasHubBackbone, preset_limits
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.lstm import LstmLM
from tfpref.models.tasks import CausalLM, Classifier, RewardModel
from tfpref.models.transformer import TransformerLM

MODEL_CLASSES = {"transformer": TransformerLM, "lstm": LstmLM, "conv": ConvEncoder}
# How each objective asks its language model for aligned text, and which ones need a value head.
CONDITIONING = {"conditional": "control_tokens", "preference_vector": "preference_vector"}
VALUE_HEAD_OBJECTIVES = ("awr", "ppo")
# The length a preference vector asks for: a typical stdlib segment at each --segment granularity.
TYPICAL_SEGMENT_BYTES = {"line": 40, "chunk": 1200, "document": 1200}


def build_model(model_config, seed=None):
    """A built (weights created) backbone from a `ModelConfig`: a language model, or the conv encoder."""
    if model_config.model == "keras_hub":  # the preset brings its architecture and weights
        tokenizer = KerasHubTokenizer(model_config.preset)
        return KerasHubBackbone(model_config.preset, lora_rank=model_config.lora_rank, eos_id=tokenizer.eos_id,
                                generation_banned_ids=tokenizer.generation_banned_ids,
                                added_tokens=tuple(tokenizer.control_tokens), name="keras_hub")
    # The conv encoder scores text and never generates: only language models take banned ids.
    generation = {} if model_config.model == "conv" else {"generation_banned_ids": generation_banned_ids(model_config)}
    model = MODEL_CLASSES[model_config.model](
        vocab_size=model_vocab_size(model_config), d_model=model_config.d_model, num_layers=model_config.num_layers,
        num_heads=model_config.num_heads, ff_dim=model_config.ff_dim, dropout=model_config.dropout,
        tie_embeddings=model_config.tie_embeddings, max_seq_len=MAX_TRANSFORMER_SEQ_LEN, seed=seed,
        name=model_config.model, **generation)
    model.build()
    return model


def max_positions(model_config):
    """The longest sequence the model a ModelConfig describes can encode (None: no limit, the LSTM)."""
    if model_config.model == "keras_hub":  # its learned position table, read from the preset's config
        return preset_limits(model_config.preset)[1]
    return MAX_TRANSFORMER_SEQ_LEN if model_config.model == "transformer" else None


def build_task_model(config, seed=None):
    """The task model the RunConfig `config`'s objective trains, with a new backbone."""
    backbone = build_model(config.model, seed=seed)
    objective = config.train.objective
    if objective == "classify":
        return Classifier(backbone, config.classes, dropout=config.model.dropout, name="classifier_model")
    if objective == "reward_model":
        return RewardModel(backbone, config.align.reward_pooling, config.align.code_structure, name="reward_model")
    return CausalLM(backbone, CONDITIONING.get(objective, "none"), objective in VALUE_HEAD_OBJECTIVES,
                    TYPICAL_SEGMENT_BYTES[config.feedback.segment], name="causal_lm")


__all__ = ["build_model", "build_task_model", "max_positions", "sequence_logprobs", "TransformerLM", "LstmLM",
           "ConvEncoder", "ScalarHead", "ClassifierHead", "RewardHead", "CausalLM", "RewardModel", "Classifier",
           "MODEL_CLASSES", "KerasHubBackbone"]
