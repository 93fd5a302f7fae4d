"""Lossless byte-level tokenizer with reserved special and control ids.

Ids 0..NUM_SPECIAL-1 are reserved (PAD, BOS, EOS, then spare ids that later objectives use as
control tokens such as `<|aligned|>`); byte b is id NUM_SPECIAL + b. Every UTF-8 text round-trips
exactly, tabs, CRLF and non-ASCII included, because the tokenizer never normalises anything.

The NumPy path (`encode`/`decode`) feeds training data fast; `encode_tf` does the same inside a
TensorFlow graph so exported SavedModels can take plain strings.
"""
import numpy as np
import tensorflow as tf

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
NUM_SPECIAL = 16
CONTROL_IDS = tuple(range(3, NUM_SPECIAL))  # 13 spare ids for control tokens
# Control tokens with a fixed meaning; ids never change, so checkpoints stay compatible.
# 7..10 are the chat template's role markers and end of turn (tfpref.data.chat).
CONTROL_TOKENS = {"<|mask|>": 3, "<|reconstruct|>": 4, "<|aligned|>": 5, "<|misaligned|>": 6,
                  "<|system|>": 7, "<|user|>": 8, "<|assistant|>": 9, "<|end|>": 10}
VOCAB_SIZE = NUM_SPECIAL + 256


def left_pad(sequences, width=None, pad_id=PAD_ID):
    """(ids int32 [batch, width], mask bool) of id sequences, padded on the left to `width`
    (default: the longest)."""
    longest = max([len(s) for s in sequences] + [width or 0])
    ids = np.full((len(sequences), longest), pad_id, np.int32)
    mask = np.zeros((len(sequences), longest), bool)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            ids[row, -len(sequence):] = sequence
            mask[row, -len(sequence):] = True
    return ids, mask


class Tokenizer:
    """What the data layer asks of a tokenizer: text <-> ids and the ids with a meaning.

    Implemented by `ByteTokenizer` (tfpref's own vocabulary, control tokens at fixed ids) and by
    `tfpref.data.tokenizers.KerasHubTokenizer` (a keras-hub preset's, control tokens appended after it).
    """

    vocab_size = 0
    pad_id = bos_id = eos_id = 0
    control_tokens = {}  # name -> id of each control token, by CONTROL_TOKENS' names (conditions, chat roles)
    control_ids = ()  # ids that are inputs only (control tokens), never text targets: one contiguous block
    generation_banned_ids = ()  # ids generation never emits (padding, a second BOS, control tokens)

    def encode(self, text, add_bos=False, add_eos=False):
        """int32 ids of `text`, with BOS / EOS around it when asked."""
        raise NotImplementedError

    def decode(self, ids):
        """Text of `ids`; special ids are dropped."""
        raise NotImplementedError

    def encode_all(self, texts, add_bos=False, add_eos=False):
        """`encode` of each text (a tokenizer may do a batch at once)."""
        return [self.encode(text, add_bos=add_bos, add_eos=add_eos) for text in texts]

    def encode_tf(self, texts, add_bos=False, add_eos=False):
        """Ragged [batch, None] int32 ids of a 1-D string tensor, inside a TF graph."""
        raise NotImplementedError

    def decode_tf(self, ids, mask=None):
        """1-D string tensor of `ids` [batch, time] (special ids and masked-off positions dropped),
        inside a TF graph."""
        raise NotImplementedError

    def byte_lengths(self):
        """int32 [vocab_size]: bytes of text each id stands for (0 for special and control ids), what
        makes bits per byte exact; None when ids are not whole bytes (a keras-hub preset's)."""
        return None

    def graph_resources(self):
        """Objects a SavedModel using `encode_tf` / `decode_tf` must hold (lookup tables' owners)."""
        return []


class ByteTokenizer(Tokenizer):
    """Bytes of UTF-8 text, shifted past the reserved ids.

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.decode(tok.encode("x\\t= 'é'\\r\\n"))
        "x\\t= 'é'\\r\\n"
    """

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID
    vocab_size = VOCAB_SIZE
    num_special = NUM_SPECIAL
    control_tokens = CONTROL_TOKENS
    control_ids = CONTROL_IDS
    generation_banned_ids = (PAD_ID, BOS_ID) + CONTROL_IDS

    def byte_lengths(self):
        return np.array([0] * NUM_SPECIAL + [1] * 256, np.int32)

    def encode(self, text, add_bos=False, add_eos=False):
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + NUM_SPECIAL
        parts = ([np.array([BOS_ID], np.int32)] if add_bos else []) + [ids]
        if add_eos:
            parts.append(np.array([EOS_ID], np.int32))
        return np.concatenate(parts) if len(parts) > 1 else ids

    def encode_all(self, texts, add_bos=False, add_eos=False):
        # One buffer for all texts: a chunk's many short lines cost one NumPy call, not one each.
        encoded = [text.encode("utf-8") for text in texts]
        ids = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int32) + NUM_SPECIAL
        rows = np.split(ids, np.cumsum([len(e) for e in encoded])[:-1]) if encoded else []
        if not (add_bos or add_eos):
            return rows
        before = np.array([BOS_ID] if add_bos else [], np.int32)
        after = np.array([EOS_ID] if add_eos else [], np.int32)
        return [np.concatenate([before, row, after]) for row in rows]

    def decode(self, ids):
        """Text of the byte ids in `ids`; special ids are dropped, invalid UTF-8 is replaced."""
        ids = np.asarray(ids).reshape(-1)
        data = (ids[ids >= NUM_SPECIAL] - NUM_SPECIAL).astype(np.uint8).tobytes()
        return data.decode("utf-8", errors="replace")

    def encode_tf(self, texts, add_bos=False, add_eos=False):
        """Ragged [batch, None] int32 ids of a 1-D string tensor, inside a TF graph."""
        single_bytes = tf.strings.bytes_split(texts)  # ragged [batch, None] of 1-byte strings
        ids = tf.ragged.map_flat_values(
            lambda b: tf.cast(tf.reshape(tf.io.decode_raw(b, tf.uint8, fixed_length=1), [-1]), tf.int32)
            + NUM_SPECIAL, single_bytes)
        parts = ([tf.fill([tf.shape(texts)[0], 1], BOS_ID)] if add_bos else []) + [ids]
        if add_eos:
            parts.append(tf.fill([tf.shape(texts)[0], 1], EOS_ID))
        return tf.concat(parts, axis=1) if len(parts) > 1 else ids

    def decode_tf(self, ids, mask=None):
        """1-D string tensor of the bytes in `ids` [batch, time] (special ids and masked-off positions
        dropped), inside a TF graph. Like `decode`, but the bytes are returned as they are."""
        byte_strings = tf.constant([b""] * NUM_SPECIAL + [bytes([b]) for b in range(256)])
        pieces = tf.gather(byte_strings, ids)
        if mask is not None:
            pieces = tf.where(mask, pieces, b"")
        return tf.strings.reduce_join(pieces, axis=-1)
