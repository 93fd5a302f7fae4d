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

from tfpref.data.tokenizer import ByteTokenizer, Tokenizer

KERAS_HUB_MODEL = "keras_hub"


class KerasHubTokenizer(Tokenizer):
    """A keras-hub preset's tokenizer behind tfpref's `Tokenizer` interface.

    BOS and EOS are the preset's start and end tokens (both `<|endoftext|>` for GPT-2); padding is
    its pad token, or the end token when it has none (padding is always masked anyway). There are
    no control ids: the vocabulary is the preset's.

    Args:
        preset: a keras-hub preset directory (written by `save_to_preset`) or preset name.
    """

    def __init__(self, preset):
        self.preset = preset
        self.hub_tokenizer = keras_hub.models.Tokenizer.from_preset(preset)
        self.vocab_size = int(self.hub_tokenizer.vocabulary_size())
        end = self.hub_tokenizer.end_token_id
        start = getattr(self.hub_tokenizer, "start_token_id", None)
        pad = getattr(self.hub_tokenizer, "pad_token_id", None)
        self.eos_id = int(end)
        self.bos_id = int(end if start is None else start)
        self.pad_id = int(end if pad is None else pad)
        self.special_ids = np.array(sorted({self.bos_id, self.eos_id, self.pad_id}), np.int32)
        # GPT-2's BOS, EOS and padding are one token: ending a text must stay possible.
        self.generation_banned_ids = tuple(sorted({self.bos_id, self.pad_id} - {self.eos_id}))

    def encode(self, text, add_bos=False, add_eos=False):
        return self.encode_all([text], add_bos=add_bos, add_eos=add_eos)[0]

    def encode_all(self, texts, add_bos=False, add_eos=False):
        if not texts:
            return []
        # One call for the whole list: the keras-hub tokenizer runs in TensorFlow, per call.
        # A list in gives lists back (a tensor in, a ragged tensor).
        encoded = self.hub_tokenizer(list(texts))
        rows = [np.asarray(row, np.int32) for row in (encoded.to_list() if hasattr(encoded, "to_list") else encoded)]
        before = [self.bos_id] if add_bos else []
        after = [self.eos_id] if add_eos else []
        return [np.concatenate([np.array(before, np.int32), row, np.array(after, np.int32)]) for row in rows]

    def decode(self, ids):
        ids = np.asarray(ids, np.int32).reshape(-1)
        ids = ids[~np.isin(ids, self.special_ids)]
        if not len(ids):
            return ""
        text = self.hub_tokenizer.detokenize(ids)
        text = text.numpy() if hasattr(text, "numpy") else text
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def tokenizer_for(model_config):
    """The tokenizer of the model a ModelConfig describes."""
    if model_config.model == KERAS_HUB_MODEL:
        return KerasHubTokenizer(model_config.preset)
    return ByteTokenizer()


def control_ids_for(model_config):
    """Ids that are control tokens (inputs, never text) for this model's vocabulary, without loading it."""
    return () if model_config.model == KERAS_HUB_MODEL else ByteTokenizer.control_ids
