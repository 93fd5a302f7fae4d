"""Task models: a backbone plus what one task puts on it, as one Keras object (keras-hub's split).

  * `CausalLM`: a language model and how it is asked for aligned text (control tokens, or a
    preference vector added to its embeddings); `value_head=True` adds a per-token value estimate
    (AWR and PPO: a policy with a value head).
  * `RewardModel`: backbone, scalar reward head with its normalisation, and optional line-structure
    embeddings of code.
  * `Classifier`: backbone and a classification head, with the class names.

Every head is built when the task model is made, so a task model restores, exports and serializes
as a whole. `parts` lists the backbone and the heads in a fixed order: the checkpoint keys and the
optimizer's variable order follow it (and match those of run directories written before task models
existed).

Example:
    >>> policy = CausalLM(backbone, conditioning="control_tokens")
    >>> policy.prompt_prefix(aligned=True)   # (5,): <|aligned|> after BOS (a byte model's id)
"""
import keras
import numpy as np
import tensorflow as tf

from tfpref.data.tokenizer import PAD_ID
from tfpref.models.code_structure import CodeStructureEmbedding
from tfpref.models.heads import ClassifierHead, RewardHead, ScalarHead
from tfpref.models.layers import init_normal

CONDITIONINGS = ("none", "control_tokens", "preference_vector")

# Preference vectors: scores at or above SCORE_SCALE saturate the score attribute at 1 (one PEP 8
# violation in a 40-byte line is 0.025, attribute 0.5); lengths are log1p(bytes) / log1p(MAX_LENGTH).
SCORE_SCALE = 0.05
MAX_LENGTH = 4096
MISALIGNED_SCORE = SCORE_SCALE


def preference_features(scores, lengths):
    """float32 [..., 2]: (score attribute, length attribute), each in [0, 1]."""
    score = tf.minimum(tf.cast(scores, tf.float32) / SCORE_SCALE, 1.0)
    length = tf.minimum(tf.math.log1p(tf.cast(lengths, tf.float32)) / np.log1p(MAX_LENGTH), 1.0)
    return tf.stack([score, length], axis=-1)


def _real_tokens(token_ids):
    return tf.not_equal(token_ids, PAD_ID)


def _ids(token_ids):
    # Keras calls a model with float inputs when it traces it for a SavedModel; ids are integers.
    return tf.cast(token_ids, tf.int32)


class TaskModel(keras.Model):
    """A backbone and its heads. Subclasses list their heads in `heads`, built in `__init__`."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.heads = []
        self.built = True  # the backbone is built, and subclasses build each head as they add it

    def build(self, input_shape=None):
        pass

    @property
    def parts(self):
        """The backbone, then the heads: the order of checkpoint keys and of optimizer slots."""
        return [self.backbone, *self.heads]

    def trainable_weights_of(self, freeze_backbone=False):
        """What the optimizer updates, in a fixed order: the backbone unless frozen, then the heads."""
        parts = self.heads if freeze_backbone else self.parts
        return [v for part in parts for v in part.trainable_variables]

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfpref")
class CausalLM(TaskModel):
    """A language model as a task: logits, generation conditioning and an optional value head.

    It is a language model itself (`hidden_states`, `logits_from_hidden`, the cache methods are
    the backbone's), so the sampler and `sequence_logprobs` take it as they take a backbone.

    Args:
        backbone: a `LanguageBackbone` (transformer or LSTM).
        conditioning: "none", "control_tokens" (conditional training: <|aligned|> after BOS, the
            opposite token banned) or "preference_vector" (a projection of the desired
            (score, length) vector added to every embedding).
        value_head: add a `ScalarHead` on the hidden states (AWR, PPO).
        typical_length: bytes of a typical segment: the length a preference vector asks for.
    """

    def __init__(self, backbone, conditioning="none", value_head=False, typical_length=40, **kwargs):
        super().__init__(backbone, **kwargs)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning, self.typical_length = conditioning, typical_length
        self.value_head = None
        self.preference_projection = None
        if conditioning == "preference_vector":
            self.preference_projection = keras.layers.Dense(backbone.d_model, kernel_initializer=init_normal(),
                                                            name="preference_projection")
            self.preference_projection.build((None, 2))
            self.heads.append(self.preference_projection)
        if value_head:
            self.value_head = ScalarHead(name="value_head")
            self.value_head.build((None, None, backbone.d_model))
            self.heads.append(self.value_head)
        self.vocab_size, self.d_model = backbone.vocab_size, backbone.d_model

    # ---- the language model: the backbone's --------------------------------------------------

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        return self.backbone.hidden_states(token_ids, padding_mask, training=training, positions=positions,
                                           embedding_offset=embedding_offset)

    def logits_from_hidden(self, hidden):
        return self.backbone.logits_from_hidden(hidden)

    def init_cache(self, batch_size, length):
        return self.backbone.init_cache(batch_size, length)

    def hidden_states_cached(self, token_ids, cache, index, key_mask, positions, embedding_offset=None):
        return self.backbone.hidden_states_cached(token_ids, cache, index, key_mask, positions, embedding_offset)

    def call(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        return self.backbone(token_ids, padding_mask=padding_mask, training=training, positions=positions,
                             embedding_offset=embedding_offset)

    # ---- asking for aligned (or misaligned) text ---------------------------------------------

    @property
    def controllable(self):
        return self.conditioning != "none"

    def prompt_prefix(self, aligned=True):
        """Token ids that go right after BOS: <|aligned|> or <|misaligned|> in the backbone's vocabulary."""
        if self.conditioning == "control_tokens":
            return (self.backbone.control_tokens["<|aligned|>" if aligned else "<|misaligned|>"],)
        return ()

    def banned_ids(self, aligned=True):
        """Ids generation may never emit: the backbone's, but for the asked-for control token (at line
        granularity the model starts each line with one)."""
        if self.conditioning == "control_tokens":
            allowed = self.prompt_prefix(aligned)[0]
            return tuple(i for i in self.backbone.generation_banned_ids if i != allowed)
        return tuple(self.backbone.generation_banned_ids)

    @property
    def eos_id(self):
        """The id that ends a text in the backbone's vocabulary: where generation stops."""
        return self.backbone.eos_id

    def preference_offsets(self, scores, lengths):
        """[..., d_model] embedding offsets of preference vectors given as scores and lengths."""
        return self.preference_projection(preference_features(scores, lengths))

    def condition(self, batch_size, aligned=True):
        """Embedding offset [batch, d_model] to generate with, or None."""
        if self.conditioning != "preference_vector":
            return None
        score = 0.0 if aligned else MISALIGNED_SCORE
        return self.preference_offsets(tf.fill([batch_size], score), tf.fill([batch_size], self.typical_length))

    def get_config(self):
        return {**super().get_config(), "conditioning": self.conditioning,
                "value_head": self.value_head is not None, "typical_length": self.typical_length}


@keras.saving.register_keras_serializable(package="tfpref")
class RewardModel(TaskModel):
    """`model(token_ids, padding_mask, completion_mask) -> rewards` [batch], float32.

    Args:
        backbone: a language backbone or the conv encoder.
        pooling: "last" (the last real token's state) or "mean" (the mean per-token score over the
            completion), see `RewardHead`.
        code_structure: add line-structure embeddings of code to the token embeddings.
    """

    def __init__(self, backbone, pooling="last", code_structure=False, **kwargs):
        super().__init__(backbone, **kwargs)
        self.pooling = pooling
        self.reward_head = RewardHead(pooling, name="reward_head")
        self.reward_head.build((None, None, backbone.d_model))
        self.heads.append(self.reward_head)
        self.structure = None
        if code_structure:
            self.structure = CodeStructureEmbedding(backbone.d_model, name="code_structure")
            self.structure.build()
            self.heads.append(self.structure)

    def hidden_states(self, token_ids, padding_mask, training=False, freeze_backbone=False):
        token_ids = _ids(token_ids)
        offset = None if self.structure is None else self.structure(token_ids)
        hidden = self.backbone.hidden_states(token_ids, padding_mask, training=training and not freeze_backbone,
                                             embedding_offset=offset)
        if freeze_backbone and self.structure is None:
            # No gradient through the fixed backbone, unless it must reach the structure embeddings.
            hidden = tf.stop_gradient(hidden)
        return hidden

    def call(self, token_ids, padding_mask=None, completion_mask=None, normalize=True, training=False,
             freeze_backbone=False):
        """Rewards [batch]; `normalize=False` gives the raw score that training fits."""
        padding_mask = _real_tokens(token_ids) if padding_mask is None else padding_mask
        hidden = self.hidden_states(token_ids, padding_mask, training, freeze_backbone)
        return self.reward_head(hidden, padding_mask, completion_mask, normalize=normalize)

    def group_rewards(self, token_ids, padding_mask, completion_mask, normalize=True, training=False,
                      freeze_backbone=False):
        """[n, k] rewards of groups of k completions given as [n, k, T] inputs."""
        shape = tf.shape(token_ids)
        flat = [tf.reshape(x, [-1, shape[-1]]) for x in (token_ids, padding_mask, completion_mask)]
        rewards = self(*flat, normalize=normalize, training=training, freeze_backbone=freeze_backbone)
        return tf.reshape(rewards, shape[:2])

    def set_normalization(self, mean, std):
        self.reward_head.set_normalization(mean, std)

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling, "code_structure": self.structure is not None}


@keras.saving.register_keras_serializable(package="tfpref")
class Classifier(TaskModel):
    """`model(token_ids, padding_mask) -> class logits` [batch, len(classes)], from the last real token."""

    def __init__(self, backbone, classes, dropout=0.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.classes, self.dropout = list(classes), dropout
        self.head = ClassifierHead(len(self.classes), dropout=dropout, name="classifier")
        self.head.build((None, None, backbone.d_model))
        self.heads.append(self.head)

    def call(self, token_ids, padding_mask=None, training=False, freeze_backbone=False):
        """`freeze_backbone`: the backbone runs in inference mode and passes no gradient."""
        token_ids = _ids(token_ids)
        padding_mask = _real_tokens(token_ids) if padding_mask is None else padding_mask
        hidden = self.backbone.hidden_states(token_ids, padding_mask, training=training and not freeze_backbone)
        if freeze_backbone:
            hidden = tf.stop_gradient(hidden)
        return self.head(hidden, padding_mask, training=training)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "dropout": self.dropout}
