"""The tokenizer a run's model reads: tfpref's byte tokenizer, a subword vocabulary of the run's own,
or a keras-hub preset's.

A `--model keras_hub` run tokenizes its data with the preset's tokenizer (GPT-2's byte-level BPE,
SentencePiece, ...); tfpref's own models read bytes (`tfpref.data.tokenizer.ByteTokenizer`) or, with
`--tokenizer bpe|unigram`, the pieces of a `tfpref.data.subword.SubwordTokenizer` trained on the
run's training split and kept in `<model_dir>/tokenizer/`.

Example:
    >>> tokenizer = tokenizer_for(config)
    >>> tokenizer.decode(tokenizer.encode("def f():", add_bos=True))
    'def f():'
"""
import functools
import os
import shutil

import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.preset_utils import load_json

from tfpref.data.corpus import load_splits
from tfpref.data.splits import select
from tfpref.data.subword import SubwordTokenizer
from tfpref.data.tokenizer import CONTROL_TOKENS, NUM_SPECIAL, VOCAB_SIZE, ByteTokenizer, Tokenizer
from tfpref.errors import UserError

KERAS_HUB_MODEL = "keras_hub"
TOKENIZER_DIR = "tokenizer"  # <model_dir>/tokenizer/: a subword run's vocabulary
RUN_CONFIG_FILE = "config.json"  # tfpref.runs.CONFIG_FILE (runs sits above this layer)
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


def tokenizer_for(config):
    """The tokenizer of the model a RunConfig describes.

    A subword run's vocabulary is read from its directory (resume, evaluate.py, load_run), else from
    its --init_from run, else trained on the training split of its --data (memoised: a run's data
    loading and its objective ask several times); `save_run_tokenizer` writes it to the directory.
    """
    model_config = config.model
    if model_config.model == KERAS_HUB_MODEL:
        return KerasHubTokenizer(model_config.preset)
    if model_config.tokenizer == "byte":
        return ByteTokenizer()
    source = tokenizer_dir(config.model_dir)
    if os.path.isdir(source):
        tokenizer = SubwordTokenizer.load(source)
    elif os.path.exists(os.path.join(config.model_dir, RUN_CONFIG_FILE)):
        raise UserError(f"--model_dir {config.model_dir}: a --tokenizer {model_config.tokenizer} run without its "
                        f"vocabulary ({source} is missing)")
    elif config.train.init_from:
        source = tokenizer_dir(config.train.init_from)
        tokenizer = SubwordTokenizer.load(source)
    else:
        data = config.data
        source = f"--data {data.data}"
        tokenizer = _trained_tokenizer(data.data, data.text_field, data.max_chunk_chars, data.validation_data,
                                       model_config.tokenizer, model_config.vocab_size, config.train.seed)
    if (tokenizer.kind, tokenizer.pieces) != (model_config.tokenizer, model_config.vocab_size):
        raise UserError(f"{source}: a {tokenizer.kind} vocabulary of {tokenizer.pieces} pieces, but the run's "
                        f"config says --tokenizer {model_config.tokenizer} --vocab_size {model_config.vocab_size}")
    return tokenizer


@functools.lru_cache(maxsize=4)
def _trained_tokenizer(data, text_field, max_chunk_chars, validation_data, kind, vocab_size, seed):
    """A subword vocabulary trained on the training split's chunks (the same text the model trains on)."""
    texts = select(load_splits(data, text_field, max_chunk_chars, validation_data), "train")
    if not texts:
        raise UserError(f"--data {data}: no training text to train the --tokenizer {kind} vocabulary on")
    print(f"Training a {kind} vocabulary of {vocab_size} pieces on {len(texts)} training chunks", flush=True)
    return SubwordTokenizer.train(texts, kind, vocab_size, seed)


def tokenizer_dir(model_dir):
    return os.path.join(model_dir, TOKENIZER_DIR)


def save_run_tokenizer(config):
    """Write a subword run's vocabulary to `<model_dir>/tokenizer/` unless it is there (a resumed run
    keeps its own); written whole or not at all, as a half-written vocabulary would be read back."""
    if config.model.model == KERAS_HUB_MODEL or config.model.tokenizer == "byte":
        return
    target = tokenizer_dir(config.model_dir)
    if os.path.isdir(target):
        return
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer_for(config).save(partial)
    os.replace(partial, target)


def model_vocab_size(model_config):
    """Rows of the token embedding of one of tfpref's own models (byte or subword), without reading
    the vocabulary: the reserved ids plus 256 bytes, or plus --vocab_size pieces."""
    if model_config.tokenizer == "byte":
        return VOCAB_SIZE
    return NUM_SPECIAL + model_config.vocab_size


def generation_banned_ids(model_config):
    """Ids one of tfpref's own models never generates, without reading the vocabulary."""
    if model_config.tokenizer == "byte":
        return ByteTokenizer.generation_banned_ids
    return SubwordTokenizer.generation_banned_ids


def tokens_are_bytes(model_config):
    """Whether the model reads bytes (its per-token metrics are per byte)."""
    return model_config.model != KERAS_HUB_MODEL and model_config.tokenizer == "byte"


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
