"""The tokenizer a run's model reads: tfpref's byte tokenizer, or a keras-hub preset's own.

A `--model keras_hub` run tokenizes its data with the preset's tokenizer (GPT-2's byte-level BPE,
SentencePiece, ...); every other model reads bytes (`tfpref.data.tokenizer.ByteTokenizer`).

Example:
    >>> tokenizer = tokenizer_for(config.model)
    >>> tokenizer.decode(tokenizer.encode("def f():", add_bos=True))
    'def f():'
"""
import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.preset_utils import load_json

from tfpref.data.tokenizer import CONTROL_TOKENS, ByteTokenizer, Tokenizer

KERAS_HUB_MODEL = "keras_hub"
# The tokens a preset's vocabulary gets, in this order after its last id: tfpref's control tokens.
ADDED_TOKENS = tuple(CONTROL_TOKENS)


def preset_vocabulary_size(preset):
    """Rows of the preset backbone's token embedding (config.json), without loading its weights: the
    first id added tokens take (a preset's tokenizer may know fewer ids than its embedding has rows)."""
    return int(load_json(preset)["config"]["vocabulary_size"])


def added_token_ids(preset):
    """{name: id} of ADDED_TOKENS in `preset`'s vocabulary: V, V + 1, ... for a vocabulary of V ids."""
    first = preset_vocabulary_size(preset)
    return {name: first + i for i, name in enumerate(ADDED_TOKENS)}


class KerasHubTokenizer(Tokenizer):
    """A keras-hub preset's tokenizer behind tfpref's `Tokenizer` interface.

    BOS and EOS are the preset's start and end tokens (both `<|endoftext|>` for GPT-2; Qwen has no
    start token, so BOS is its end token too); padding is its pad token when that is a special token,
    else the end token (padding is always masked anyway). tfpref's
    control tokens (ADDED_TOKENS) follow the preset's V ids as V, V + 1, ... (the backbone's
    embedding grows to match, tfpref.models.vocabulary). No text encodes to them: the preset's
    tokenizer does not know them, so a message cannot forge a chat role. Decoding drops them.

    Args:
        preset: a keras-hub preset directory (written by `save_to_preset`) or preset name.
    """

    def __init__(self, preset):
        self.preset = preset
        self.hub_tokenizer = keras_hub.models.Tokenizer.from_preset(preset)
        self.control_tokens = added_token_ids(preset)
        self.control_ids = tuple(sorted(self.control_tokens.values()))
        self.vocab_size = self.control_ids[-1] + 1
        end = self.hub_tokenizer.end_token_id
        start = getattr(self.hub_tokenizer, "start_token_id", None)
        pad = getattr(self.hub_tokenizer, "pad_token_id", None)
        self.eos_id = int(end)
        self.bos_id = int(end if start is None else start)
        # Qwen's tokenizer names id 0 its pad id, yet id 0 is "!" in its vocabulary: a pad id that is
        # no special token is a text token, which decoding must keep and generation must allow.
        special = {int(i) for i in getattr(self.hub_tokenizer, "special_token_ids", ())}
        self.pad_id = int(pad if pad is not None and int(pad) in special else end)
        # Dropped when decoding: the preset's detokenizer knows no control token.
        self.special_ids = np.array(sorted({self.bos_id, self.eos_id, self.pad_id, *self.control_ids}), np.int32)
        # keras-hub tokenizes eagerly in Python and, when traced, in TensorFlow; the two differ (GPT-2's
        # eager path merges runs of spaces that its graph path splits). Training data goes through the
        # graph path as well, so that it is tokenized exactly as an exported model tokenizes its input.
        self._tokenize = tf.function(self.hub_tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
        self._detokenize = tf.function(self.hub_tokenizer.detokenize,
                                       input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
        if hasattr(self.hub_tokenizer, "_maybe_initialized_tf"):
            # keras-hub builds a byte-pair tokenizer's lookup tables at its first traced call, which
            # would put them inside that function's graph; a SavedModel needs them built outside.
            self.hub_tokenizer._maybe_initialized_tf()
        # GPT-2's BOS, EOS and padding are one token: ending a text must stay possible. Control tokens
        # are inputs (a prompt's condition, a chat role), never the model's own choice.
        self.generation_banned_ids = tuple(sorted(({self.bos_id, self.pad_id} - {self.eos_id})
                                                  | set(self.control_ids)))

    def encode(self, text, add_bos=False, add_eos=False):
        return self.encode_all([text], add_bos=add_bos, add_eos=add_eos)[0]

    def encode_all(self, texts, add_bos=False, add_eos=False):
        if not texts:
            return []
        # One call for the whole list: the keras-hub tokenizer runs in TensorFlow, per call.
        encoded = self._tokenize(tf.constant(list(texts), tf.string))
        rows = [np.asarray(row, np.int32) for row in encoded.to_list()]
        before = [self.bos_id] if add_bos else []
        after = [self.eos_id] if add_eos else []
        return [np.concatenate([np.array(before, np.int32), row, np.array(after, np.int32)]) for row in rows]

    def encode_tf(self, texts, add_bos=False, add_eos=False):
        ids = tf.cast(self.hub_tokenizer.tokenize(texts), tf.int32)
        rows = tf.shape(texts)[0]
        parts = ([tf.fill([rows, 1], self.bos_id)] if add_bos else []) + [ids]
        if add_eos:
            parts.append(tf.fill([rows, 1], self.eos_id))
        return tf.concat(parts, axis=1) if len(parts) > 1 else ids

    def decode_tf(self, ids, mask=None):
        keep = tf.logical_not(tf.reduce_any(tf.equal(ids[..., None], self.special_ids), axis=-1))
        if mask is not None:
            keep = tf.logical_and(keep, mask)
        return self.hub_tokenizer.detokenize(tf.ragged.boolean_mask(ids, keep))

    def graph_resources(self):
        return [self.hub_tokenizer]

    def decode(self, ids):
        ids = np.asarray(ids, np.int32).reshape(-1)
        ids = ids[~np.isin(ids, self.special_ids)]
        if not len(ids):
            return ""
        text = self._detokenize(tf.RaggedTensor.from_tensor(ids[None]))[0].numpy()
        return text.decode("utf-8", errors="replace")


def tokenizer_for(model_config):
    """The tokenizer of the model a ModelConfig describes."""
    if model_config.model == KERAS_HUB_MODEL:
        return KerasHubTokenizer(model_config.preset)
    return ByteTokenizer()


def tokens_are_bytes(model_config):
    """Whether the model reads bytes (its per-token metrics are per byte)."""
    return model_config.model != KERAS_HUB_MODEL


def control_tokens_for(model_config):
    """{name: id} of the control tokens in this model's vocabulary, without loading it."""
    if model_config.model == KERAS_HUB_MODEL:
        return added_token_ids(model_config.preset)
    return ByteTokenizer.control_tokens


def control_ids_for(model_config):
    """Ids that are control tokens (inputs, never text) for this model's vocabulary, without loading it."""
    if model_config.model == KERAS_HUB_MODEL:
        return tuple(sorted(added_token_ids(model_config.preset).values()))
    return ByteTokenizer.control_ids
