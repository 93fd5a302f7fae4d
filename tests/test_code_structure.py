"""Line-structure embeddings of code (--code_structure): the ids by hand, and the layer."""
import keras
import numpy as np
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.data.tokenizer import PAD_ID, ByteTokenizer
from tfpref.models.code_structure import (
    MAX_DELTA, MAX_DEPTH, MAX_INDENT, NUM_STRUCTURE_IDS, CodeStructureEmbedding, code_structure_ids)

INDENT, DELTA, DEPTH = 0, 2 * (MAX_INDENT + 1), 2 * (MAX_INDENT + 1) + 2 * (2 * MAX_DELTA + 1)
STOP = DEPTH + MAX_DEPTH + 1
AFTER_BAD_DEDENT, UNCLOSED = 2, 1
BLANK, OPENED = MAX_INDENT + 1, 2 * MAX_DELTA + 1
NONE = NUM_STRUCTURE_IDS - 1


def encode(texts, length):
    ids = np.full([len(texts), length], PAD_ID, np.int32)
    for row, text in enumerate(texts):
        encoded = ByteTokenizer().encode(text, add_bos=True)
        ids[row, :len(encoded)] = encoded
    return ids


def test_indent_indent_change_and_bracket_depth_by_hand():
    # line by line: (text, indent id, indent-change id, bracket depth of each byte)
    lines = [
        ("if a:\n", INDENT + 0, DELTA + MAX_DELTA + 0, "000000"),
        # indented 2 after a line that opened a block
        ("  b = (1,\n", INDENT + 2, DELTA + MAX_DELTA + 2 + OPENED, "0000001111"),
        # whitespace-only: its own indent ids; compared with the last non-blank line (indent 2)
        ("   \n", INDENT + 3 + BLANK, DELTA + MAX_DELTA + 1, "1111"),
        # still compared with "  b = (1," (indent 2; it did not open a block)
        (" c)\n", INDENT + 1, DELTA + MAX_DELTA - 1, "1100"),
        # over-wide indents and changes are clipped
        (" " * 40 + "d", INDENT + MAX_INDENT, DELTA + 2 * MAX_DELTA, "0" * 41),
    ]
    text = "".join(line for line, *_ in lines)
    # Python's tokenizer reads all of it: no stop id.
    expected = [[indent, delta, DEPTH + int(depth), STOP]
                for line, indent, delta, depths in lines for depth in depths]
    ids = code_structure_ids(encode([text, "x"], len(text) + 3)).numpy()
    assert ids.shape == (2, len(text) + 3, 4)
    np.testing.assert_array_equal(ids[0, 1:len(text) + 1], expected)
    # BOS and padding are neither space nor text: they get the reserved id and leave indents alone.
    assert (ids[0, 0] == NONE).all() and (ids[0, len(text) + 1:] == NONE).all()
    np.testing.assert_array_equal(ids[1, 1], [INDENT, DELTA + MAX_DELTA, DEPTH, STOP])
    assert (ids[1, 2:] == NONE).all()


def test_where_pythons_tokenizer_gives_up_by_hand():
    texts = {
        # "  c" dedents to 2, a width no enclosing block has (only 0 and 4): it and all after it
        # go unread; "d(" opens a bracket that never closes.
        "if a:\n    b\n  c\nd(\n e\n": [0, 0, AFTER_BAD_DEDENT, AFTER_BAD_DEDENT + UNCLOSED,
                                          AFTER_BAD_DEDENT + UNCLOSED],
        # a comment may sit at any width, and "c" dedents to the 0 of "if a:"
        "if a:\n    b\n  # note\nc\n": [0, 0, 0, 0],
        # a stray closer leaves the depth at -1: never back to 0, so the statement never ends
        "a)\n  b\n": [UNCLOSED, UNCLOSED],
    }
    ids = code_structure_ids(encode(list(texts), 32)).numpy()
    for row, (text, per_line) in enumerate(texts.items()):
        expected = [STOP + stop for line, stop in zip(text.splitlines(keepends=True), per_line) for _ in line]
        np.testing.assert_array_equal(ids[row, 1:len(text) + 1, 3], expected, err_msg=repr(text))


def test_layer_starts_at_zero_and_round_trips_its_config():
    layer = CodeStructureEmbedding(8)
    layer.build()
    token_ids = encode(["def f():\n    return 1\n"], 24)
    assert layer(token_ids).shape == (1, 24, 8)
    assert not np.any(layer(token_ids).numpy())  # a pretrained backbone is unchanged at first
    table = layer.embedding.embeddings
    table.assign(tf.random.normal(table.shape, seed=1))
    ids = code_structure_ids(token_ids).numpy()
    np.testing.assert_allclose(layer(token_ids).numpy(), table.numpy()[ids].sum(axis=2), rtol=1e-6)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.get_config() == layer.get_config()
