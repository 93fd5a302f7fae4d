"""What differs between the keras-hub families `KerasHubBackbone` drives, one small class per layout.

A layout says how a family embeds tokens (and whether it takes per-token positions there), how its
decoder block is called with an explicit attention mask and keras-hub's own self-attention cache,
the cache's shape, and the longest sequence the family encodes. Everything else — the blocks, the
final norm (`layer_norm`), the output head (`token_embedding(reverse=True)`, tied or not) — is
shared, so `KerasHubBackbone` stays one code path.

- GPT-2: learned absolute position embeddings added to the token embeddings, so the sampler's
  per-row positions (counting from each row's first real token) are passed in explicitly.
- Qwen: rotary positions applied inside attention at the cache index (0, 1, 2, ... by column). A
  rotary attention score depends only on the difference of the query's and the key's positions,
  and left padding shifts a row's real tokens by the same amount, so with the padding keys masked
  every row equals its unpadded self up to float rounding; `positions` are not needed.

Example:
    >>> layout = layout_for("QwenBackbone")
    >>> layout.max_length(hub_backbone.get_config())
    32768
"""
# Qwen configs record no maximum length: rotary positions have no table to run off, so the limit is
# the context Qwen2 and Qwen2.5 handle natively, 32,768 tokens (their model cards; the larger ones
# reach further only with YaRN scaling, which keras-hub's Qwen lacks). Beyond it quality degrades
# and nothing fails, so it is a limit for users, not for the code.
QWEN_CONTEXT_LENGTH = 32768


class Layout:
    """A keras-hub family's layout. Subclasses name their backbone classes and define
    `max_length(backbone_config)` (the longest sequence, from the preset's config.json "config"),
    `cache_heads(hub_backbone)` (key-value heads and head size of the cache) and
    `embed(hub_backbone, token_embeddings, positions, training)` (the blocks' input from the token
    embeddings, possibly offset, and per-row positions [batch, time])."""

    backbone_classes = ()
    required_parts = ("token_embedding", "transformer_layers", "layer_norm")
    block_arguments = {}

    def refusal(self, backbone_config):
        """Why a backbone of this family cannot be driven, from its config, or None when it can."""
        return None

    def cache_shape(self, hub_backbone, batch_size, length):
        """keras-hub's per-block self-attention cache: [batch, 2 (key, value), length, heads, head size]."""
        return [batch_size, 2, length, *self.cache_heads(hub_backbone)]

    def call_block(self, block, x, mask, training=False, cache=None, index=None):
        """A decoder block on `x` with the boolean attention mask [batch, query, key]; with `cache`
        (written at `index`) it returns (x, new cache)."""
        if cache is None:
            return block(x, decoder_attention_mask=mask, training=training, **self.block_arguments)
        return block(x, decoder_attention_mask=mask, self_attention_cache=cache,
                     self_attention_cache_update_index=index, training=training, **self.block_arguments)


class GPT2Layout(Layout):
    backbone_classes = ("GPT2Backbone",)
    required_parts = Layout.required_parts + ("position_embedding", "embeddings_add", "embeddings_dropout")
    # keras-hub's TransformerDecoder adds its own causal mask unless told not to; ours already is one.
    block_arguments = {"use_causal_mask": False}

    def max_length(self, backbone_config):
        return int(backbone_config["max_sequence_length"])

    def cache_heads(self, hub_backbone):
        attention = hub_backbone.transformer_layers[0]._self_attention_layer
        return int(attention.num_heads), int(attention.key_dim)

    def embed(self, hub_backbone, token_embeddings, positions, training):
        positional = hub_backbone.position_embedding(token_embeddings, positions=positions)
        x = hub_backbone.embeddings_add((token_embeddings, positional))
        return hub_backbone.embeddings_dropout(x, training=training)


class QwenLayout(Layout):
    # Qwen's decoder always adds its own causal mask (at the cache index); it agrees with ours.
    backbone_classes = ("QwenBackbone",)

    def refusal(self, backbone_config):
        # keras-hub's sliding-window mask tests the cache index as a Python bool, which fails when the
        # sampler's index is traced. Qwen2 and Qwen2.5's released models do not use the window.
        if backbone_config.get("use_sliding_window_attention"):
            return "sliding-window attention is not supported (keras-hub cannot cache it in a compiled loop)"
        return None

    def max_length(self, backbone_config):
        return QWEN_CONTEXT_LENGTH

    def cache_heads(self, hub_backbone):
        # Grouped-query attention: the cache holds the key-value heads, fewer than the query heads.
        return (int(hub_backbone.num_key_value_heads),
                int(hub_backbone.hidden_dim) // int(hub_backbone.num_query_heads))

    def embed(self, hub_backbone, token_embeddings, positions, training):
        return token_embeddings  # positions enter inside attention, by cache index (see the module docstring)


LAYOUTS = {name: layout for layout in (GPT2Layout(), QwenLayout()) for name in layout.backbone_classes}
SUPPORTED_BACKBONES = tuple(LAYOUTS)


def layout_for(class_name):
    """The layout of a backbone class name, or None when it is not supported."""
    return LAYOUTS.get(class_name)

