"""A keras-hub preset (a pretrained CausalLM) as a tfpref language backbone.

`KerasHubBackbone` runs the preset's own layers — token embeddings, its decoder blocks, the final
norm, the output head (`token_embedding(reverse=True)`, tied or untied) — but drives them itself
instead of through `CausalLM.call_with_cache`: keras-hub's cached pass takes one scalar start index
for the whole batch and no key mask (it right-pads prompts), while tfpref's sampler left-pads
prompts and masks the padding keys. Every block is called with an explicit attention mask
[batch, query, key] (causal and not padding) and, when generating, with keras-hub's own
self-attention cache ([batch, 2, length, key-value heads, head_dim] per block) updated at `index`.

Supported (one layout each in `tfpref.models.keras_hub_layouts`, chosen by backbone class):
- GPT-2 (`GPT2Backbone`): learned absolute position embeddings, given each row's own positions
  (counting from its first real token), so a left-padded row sees the positions it would unpadded.
- Qwen (`QwenBackbone`): rotary positions, applied inside attention at the cache index (the column),
  which cannot be set per row. It need not be: a rotary attention score depends only on the
  difference of the query's and the key's positions, left padding shifts all of a row's real tokens
  by the same amount, and the padding keys are masked, so each row equals its unpadded result up to
  float rounding. Its config records no maximum length; the limit is Qwen2's pretraining context.
Other backbones (Llama, Gemma, OPT, ...) are refused when a run is configured and when loaded.

Example:
    >>> backbone = KerasHubBackbone("/path/to/gpt2_preset")
    >>> logits = backbone(tf.constant([[464, 2068]]))          # [1, 2, vocab], float32
"""
import keras
import keras_hub
import tensorflow as tf
from keras_hub.src.utils.preset_utils import load_json

from tfpref.models.keras_hub_layouts import SUPPORTED_BACKBONES, layout_for
from tfpref.models.vocabulary import with_added_tokens


def load_causal_lm(preset):
    """The keras-hub CausalLM saved at `preset` (a directory written by `save_to_preset`, or a preset name)."""
    return keras_hub.models.CausalLM.from_preset(preset)


def preset_limits(preset):
    """(backbone class name, longest sequence it encodes) from the preset's config.json, without loading
    weights; raises ValueError for what is not a preset of a supported backbone."""
    try:
        config = load_json(preset)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"not a keras-hub preset ({e})") from None
    class_name = config.get("class_name", "?")
    layout = layout_for(class_name)
    if layout is None:
        raise ValueError(f"a {class_name}: only {' and '.join(SUPPORTED_BACKBONES)} presets are supported so far")
    refusal = layout.refusal(config["config"])
    if refusal:
        raise ValueError(f"a {class_name}: {refusal}")
    return class_name, layout.max_length(config["config"])


def load_hub_backbone(preset):
    """The backbone of the preset alone: the language model's every weight (the output projection is
    its reversible token embedding), without the tokenizer, whose vocabulary files Keras refuses to
    read while deserializing a model in safe mode."""
    return keras_hub.models.Backbone.from_preset(preset)


def unsupported_reason(hub_backbone):
    """Why `hub_backbone` cannot be adapted, or None when it can."""
    class_name = type(hub_backbone).__name__
    layout = layout_for(class_name)
    if layout is None:
        return f"a {class_name}: only {' and '.join(SUPPORTED_BACKBONES)} presets are supported so far"
    missing = [name for name in layout.required_parts if not hasattr(hub_backbone, name)]
    if missing:
        return f"{class_name} has no {', '.join(missing)}, which its layout needs"
    refusal = layout.refusal(hub_backbone.get_config())
    return f"a {class_name}: {refusal}" if refusal else None


def enable_lora(hub_backbone, rank):
    """keras-hub's `enable_lora(rank)`, and the adapted layers' biases frozen too: keras-hub leaves
    them trainable, and then the base model would change (LoRA trains the adapters alone)."""
    hub_backbone.enable_lora(rank)
    for variable in hub_backbone.trainable_variables:
        if not is_lora_weight(variable):
            variable.trainable = False


def is_lora_weight(variable):
    return variable.path.rsplit("/", 1)[-1].startswith("lora_kernel_")


@keras.saving.register_keras_serializable(package="tfpref")
class KerasHubBackbone(keras.Model):
    """`model(token_ids, padding_mask) -> logits` [batch, time, vocab] float32, from a keras-hub preset.

    The same interface as tfpref's `LanguageBackbone` (`hidden_states`, `logits_from_hidden`,
    `init_cache`, `hidden_states_cached`, `vocab_size`, `d_model`), so task models, the sampler
    and `sequence_logprobs` take it as they take the transformer.

    Args:
        preset: the keras-hub preset (a directory saved with `save_to_preset`); recorded in the config.
        lora_rank: > 0 freezes the preset's weights and trains rank-`lora_rank` adapters on the
            attention's query and value projections (keras-hub's `enable_lora`).
        eos_id: the preset tokenizer's end token: where generation stops (None: nowhere).
        generation_banned_ids: ids generation never emits (the preset's start and pad tokens when
            they are not its end token, the added control tokens).
        added_tokens: names of tokens appended to the preset's V ids as V, V + 1, ... (tfpref's control
            tokens, `control_tokens` maps them to their ids); the embedding grows to match, new rows
            at the mean of the old ones (tfpref.models.vocabulary). Recorded in the config.
        hub_backbone: an already loaded keras-hub backbone of `preset`, without added tokens (default: load it).

    The token ids are arguments, not read from the preset here, because Keras deserializes a model
    in safe mode, where a preset tokenizer's vocabulary files may not be read; `build_model` takes
    them from `tfpref.data.tokenizers.KerasHubTokenizer`.
    """

    def __init__(self, preset, lora_rank=0, eos_id=None, generation_banned_ids=(), added_tokens=(),
                 hub_backbone=None, **kwargs):
        super().__init__(**kwargs)
        self.preset, self.lora_rank = preset, int(lora_rank)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.generation_banned_ids = tuple(int(i) for i in generation_banned_ids)
        self.added_tokens = tuple(added_tokens)
        hub_backbone = load_hub_backbone(preset) if hub_backbone is None else hub_backbone
        reason = unsupported_reason(hub_backbone)
        if reason:
            raise ValueError(f"keras-hub preset {preset}: {reason}")
        first_added = int(hub_backbone.vocabulary_size)
        self.control_tokens = {name: first_added + i for i, name in enumerate(self.added_tokens)}
        if self.added_tokens:  # before LoRA: the grown backbone is a new one, adapted like the preset's
            hub_backbone = with_added_tokens(hub_backbone, len(self.added_tokens))
        self.hub_backbone = hub_backbone
        self.vocab_size = int(hub_backbone.vocabulary_size)
        self.d_model = int(hub_backbone.hidden_dim)
        self.num_layers = len(hub_backbone.transformer_layers)
        self._layout = layout_for(type(hub_backbone).__name__)
        self.max_seq_len = self._layout.max_length(hub_backbone.get_config())
        if self.lora_rank:
            enable_lora(hub_backbone, self.lora_rank)
        self.built = True

    def build(self, input_shape=None):
        pass

    @property
    def blocks(self):
        return self.hub_backbone.transformer_layers

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        """[batch, time, d_model] final-normalised states; `positions` default to 0, 1, 2, ... per row."""
        token_ids = tf.cast(token_ids, tf.int32)
        batch, time = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        if positions is None:
            positions = tf.broadcast_to(tf.range(time)[None, :], [batch, time])
        x = self._embed(token_ids, positions, embedding_offset, training)
        mask = _attention_mask(batch, time, time, 0, padding_mask)
        for block in self.blocks:
            x = self._layout.call_block(block, x, mask, training=training)
        return self.hub_backbone.layer_norm(x)

    def init_cache(self, batch_size, length):
        """keras-hub's self-attention cache of each block: a tuple of [batch, 2, length, heads, head_dim]."""
        shape = self._layout.cache_shape(self.hub_backbone, batch_size, length)
        return tuple(tf.zeros(shape, self.hub_backbone.compute_dtype) for _ in self.blocks)

    def hidden_states_cached(self, token_ids, cache, index, key_mask, positions, embedding_offset=None):
        """(states [batch, steps, d_model], new cache) of `token_ids` written at index..index+steps-1;
        `key_mask` [batch, length] marks the cache positions holding real tokens."""
        token_ids = tf.cast(token_ids, tf.int32)
        x = self._embed(token_ids, positions, embedding_offset, training=False)
        mask = _attention_mask(tf.shape(token_ids)[0], tf.shape(token_ids)[1], tf.shape(cache[0])[2], index,
                               key_mask)
        new_cache = []
        for block, block_cache in zip(self.blocks, cache):
            x, block_cache = self._layout.call_block(block, x, mask, cache=block_cache, index=index)
            new_cache.append(block_cache)
        return self.hub_backbone.layer_norm(x), tuple(new_cache)

    def logits_from_hidden(self, hidden):
        return tf.cast(self.hub_backbone.token_embedding(hidden, reverse=True), tf.float32)

    def call(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        return self.logits_from_hidden(self.hidden_states(
            token_ids, padding_mask, training=training, positions=positions, embedding_offset=embedding_offset))

    def _embed(self, token_ids, positions, embedding_offset, training):
        hub = self.hub_backbone
        tokens = hub.token_embedding(token_ids)
        if embedding_offset is not None:
            tokens = tokens + tf.cast(embedding_offset, tokens.dtype)
        return self._layout.embed(hub, tokens, positions, training)

    def get_config(self):
        return {**super().get_config(), "preset": self.preset, "lora_rank": self.lora_rank, "eos_id": self.eos_id,
                "generation_banned_ids": list(self.generation_banned_ids), "added_tokens": list(self.added_tokens)}


def _attention_mask(batch, query_len, key_len, query_offset, key_mask=None):
    """Boolean [batch, query_len, key_len]: key j visible to query i at position query_offset + i
    (causal), and a real token (`key_mask`)."""
    visible = tf.range(key_len)[None, :] <= tf.range(query_len)[:, None] + query_offset
    visible = tf.broadcast_to(visible[None], [batch, query_len, key_len])
    if key_mask is not None:
        visible = tf.logical_and(visible, tf.cast(key_mask, tf.bool)[:, None, :])
    return visible
