"""A lossless subword tokenizer (SentencePiece BPE or unigram) with tfpref's reserved ids.

SentencePiece normalises text and treats whitespace specially; to stay lossless on any text (tabs,
CRLF, runs of spaces, U+2581, NUL, literal "<|aligned|>"), it never sees the text itself: each UTF-8
byte is first mapped to one printable character of a 256-character alphabet (none of them whitespace
or U+2581), and SentencePiece is trained on, and encodes, that mapped text with normalisation off.
Every alphabet character is in the vocabulary, so no text has an unknown piece.

Ids keep the byte tokenizer's layout: 0..NUM_SPECIAL-1 are PAD, BOS, EOS and the control tokens at the
same ids (checkpoints and objectives agree on them), and SentencePiece piece p is id NUM_SPECIAL + p.

Example:
    >>> tokenizer = SubwordTokenizer.train(["def f(x):\\n    return x\\n"] * 50, "bpe", 300)
    >>> tokenizer.decode(tokenizer.encode("\\tliteral <|aligned|> \\r\\n"))
    '\\tliteral <|aligned|> \\r\\n'
"""
import json
import os
import re

import numpy as np
import sentencepiece as spm
import tensorflow as tf

from tfpref.config import MIN_SUBWORD_VOCAB
from tfpref.data.tokenizer import BOS_ID, CONTROL_IDS, CONTROL_TOKENS, EOS_ID, NUM_SPECIAL, PAD_ID, Tokenizer
from tfpref.errors import UserError

SUBWORD_KINDS = ("bpe", "unigram")
MODEL_FILE = "sentencepiece.model"
INFO_FILE = "tokenizer.json"
UNK_PIECE = 0  # SentencePiece's unknown piece; never produced (every byte's character is a piece)
# SentencePiece skips training sentences longer than its max_sentence_length (4192 bytes); a mapped
# character is at most 2 UTF-8 bytes, so sentences are cut at this many characters.
SENTENCE_CHARS = 1000
# Enough sentences (lines) for a vocabulary of a few thousand pieces, few enough to train in seconds.
MAX_TRAINING_SENTENCES = 200_000


def byte_alphabet():
    """The character each byte value maps to: printable Latin-1 bytes keep their own code point, the
    others (controls, space, NBSP, soft hyphen) take U+0100 onwards, in byte order: all printable,
    none whitespace (the same construction as GPT-2's byte-level BPE)."""
    kept = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    moved = [b for b in range(256) if b not in kept]
    chars = {b: chr(b) for b in kept}
    chars.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return "".join(chars[b] for b in range(256))


ALPHABET = byte_alphabet()
_TO_ALPHABET = {b: ALPHABET[b] for b in range(256)}  # str.translate table of latin-1 decoded bytes
_FROM_ALPHABET = {ch: b for b, ch in enumerate(ALPHABET)}


def to_alphabet(text):
    """`text`'s UTF-8 bytes as alphabet characters, one per byte."""
    return text.encode("utf-8").decode("latin-1").translate(_TO_ALPHABET)


def from_alphabet(mapped):
    """The bytes alphabet characters stand for."""
    return bytes(_FROM_ALPHABET[ch] for ch in mapped)


def training_sentences(texts, limit=MAX_TRAINING_SENTENCES):
    """Mapped lines of `texts` (newline kept, cut to SENTENCE_CHARS), at most `limit` of them, and
    one more holding the whole alphabet, so that every byte's character is a piece."""
    sentences = []
    for text in texts:
        for line in to_alphabet(text).split(_TO_ALPHABET[ord("\n")]):
            # The separator goes back on: pieces may end a line with its newline, as text does.
            line += _TO_ALPHABET[ord("\n")]
            sentences.extend(line[i:i + SENTENCE_CHARS] for i in range(0, len(line), SENTENCE_CHARS))
            if len(sentences) >= limit:
                return sentences[:limit] + [ALPHABET]
    return sentences + [ALPHABET]


def train_model_proto(texts, kind, vocab_size, seed=0):
    """The serialized SentencePiece model of `kind` with `vocab_size` pieces, trained on `texts`.

    Raises UserError naming --vocab_size when the texts cannot fill that vocabulary.
    """
    if vocab_size < MIN_SUBWORD_VOCAB:
        raise UserError(f"--vocab_size {vocab_size} is too small for --tokenizer {kind}: the 256 byte "
                        f"characters and the unknown piece need room; use at least {MIN_SUBWORD_VOCAB}")
    spm.set_random_generator_seed(seed)  # the sentence sample and unigram's EM are seeded: runs repeat
    proto = _ProtoWriter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(training_sentences(texts)), model_writer=proto, model_type=kind,
            vocab_size=vocab_size, character_coverage=1.0, normalization_rule_name="identity",
            add_dummy_prefix=False, remove_extra_whitespaces=False, split_by_whitespace=False,
            split_digits=False, byte_fallback=False, unk_id=UNK_PIECE, bos_id=-1, eos_id=-1, pad_id=-1,
            input_sentence_size=MAX_TRAINING_SENTENCES, shuffle_input_sentence=True,
            max_sentence_length=4 * SENTENCE_CHARS, hard_vocab_limit=True, num_threads=1,
            minloglevel=2)
    except RuntimeError as e:
        most = re.search(r"value <= (\d+)", str(e))
        why = (f"the training text allows at most {most.group(1)} pieces" if most
               else (str(e).strip().splitlines() or [type(e).__name__])[-1])
        raise UserError(f"--vocab_size {vocab_size}: cannot train a {kind} vocabulary of that size ({why}); "
                        f"lower --vocab_size") from None
    return proto.data


class _ProtoWriter:
    """Collects the trained model's bytes (SentencePieceTrainer writes to any object with `write`)."""

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data


class SubwordTokenizer(Tokenizer):
    """SentencePiece pieces over byte-mapped text, shifted past tfpref's reserved ids.

    Args:
        model_proto: a serialized SentencePiece model trained on mapped text (`train_model_proto`).
        kind: "bpe" or "unigram" (recorded with the vocabulary; the proto knows it too).
    """

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID
    num_special = NUM_SPECIAL
    control_tokens = CONTROL_TOKENS
    control_ids = CONTROL_IDS
    unk_id = NUM_SPECIAL + UNK_PIECE
    generation_banned_ids = (PAD_ID, BOS_ID) + CONTROL_IDS + (NUM_SPECIAL + UNK_PIECE,)

    def __init__(self, model_proto, kind):
        self.model_proto, self.kind = model_proto, kind
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pieces = self.processor.get_piece_size()
        self.vocab_size = NUM_SPECIAL + self.pieces
        # What each id stands for as bytes: decoding joins these, and their lengths make bits per byte.
        self.id_bytes = [b""] * NUM_SPECIAL + [
            b"" if self.processor.is_unknown(p) else from_alphabet(self.processor.id_to_piece(p))
            for p in range(self.pieces)]
        self._graph = None  # the TF path's objects, made at first use: training never needs them

    @classmethod
    def train(cls, texts, kind, vocab_size, seed=0):
        """A tokenizer of `kind` with `vocab_size` pieces trained on `texts`."""
        return cls(train_model_proto(texts, kind, vocab_size, seed), kind)

    def byte_lengths(self):
        """int32 [vocab_size]: bytes of text each id stands for (0 for special ids and the unknown piece)."""
        return np.array([len(b) for b in self.id_bytes], np.int32)

    # ---- saving in a run directory ------------------------------------------------------------

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, MODEL_FILE), "wb") as f:
            f.write(self.model_proto)
        with open(os.path.join(directory, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump({"kind": self.kind, "vocab_size": self.pieces, "num_special": NUM_SPECIAL,
                       "input": "utf-8 bytes as tfpref.data.subword.ALPHABET characters"}, f, indent=2)

    @classmethod
    def load(cls, directory):
        """The tokenizer `save` wrote to `directory`; UserError when it is missing or unreadable."""
        try:
            with open(os.path.join(directory, INFO_FILE), encoding="utf-8") as f:
                info = json.load(f)
            with open(os.path.join(directory, MODEL_FILE), "rb") as f:
                return cls(f.read(), info["kind"])
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UserError(f"{directory}: cannot read the run's tokenizer ({e})") from None

    # ---- NumPy path ---------------------------------------------------------------------------

    def encode(self, text, add_bos=False, add_eos=False):
        return self.encode_all([text], add_bos=add_bos, add_eos=add_eos)[0]

    def encode_all(self, texts, add_bos=False, add_eos=False):
        if not texts:
            return []
        pieces = self.processor.encode([to_alphabet(text) for text in texts], out_type=int)
        before = [BOS_ID] if add_bos else []
        after = [EOS_ID] if add_eos else []
        return [np.array(before + [NUM_SPECIAL + p for p in row] + after, np.int32) for row in pieces]

    def decode(self, ids):
        """Text of `ids`; special ids and the unknown piece are dropped, invalid UTF-8 is replaced."""
        ids = np.asarray(ids).reshape(-1)
        data = b"".join(self.id_bytes[i] for i in ids[(ids >= 0) & (ids < self.vocab_size)])
        return data.decode("utf-8", errors="replace")

    # ---- TensorFlow graph path ----------------------------------------------------------------

    def _graph_objects(self):
        if self._graph is None:
            # tensorflow_text registers the SentencePiece ops; a process loading the SavedModel must
            # import it too. Imported here so that training, which never needs it, does not load it.
            import tensorflow_text

            self._graph = (tensorflow_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32),
                           tf.constant(list(ALPHABET)), tf.constant(self.id_bytes))
        return self._graph

    def encode_tf(self, texts, add_bos=False, add_eos=False):
        sentencepiece, alphabet, _ = self._graph_objects()
        single_bytes = tf.strings.bytes_split(texts)
        byte_values = tf.ragged.map_flat_values(
            lambda b: tf.cast(tf.reshape(tf.io.decode_raw(b, tf.uint8, fixed_length=1), [-1]), tf.int32),
            single_bytes)
        mapped = tf.strings.reduce_join(tf.gather(alphabet, byte_values), axis=-1)
        ids = sentencepiece.tokenize(mapped) + NUM_SPECIAL
        rows = tf.shape(texts)[0]
        parts = ([tf.fill([rows, 1], BOS_ID)] if add_bos else []) + [ids]
        if add_eos:
            parts.append(tf.fill([rows, 1], EOS_ID))
        return tf.concat(parts, axis=1) if len(parts) > 1 else ids

    def decode_tf(self, ids, mask=None):
        """1-D string tensor of the bytes `ids` [batch, time] stand for (special ids, the unknown
        piece and masked-off positions dropped): as `decode`, but the bytes are returned as they are."""
        _, _, id_bytes = self._graph_objects()
        pieces = tf.gather(id_bytes, ids)
        if mask is not None:
            pieces = tf.where(mask, pieces, b"")
        return tf.strings.reduce_join(pieces, axis=-1)

    def graph_resources(self):
        return [self._graph_objects()[0]]
