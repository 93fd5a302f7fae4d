"""Scored training data: segments, per-token score streams, filtering and control tokens."""
import numpy as np
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.data.pipeline import example_gatherer
from tfpref.data.scored import encode_scored_chunk, load_scored_token_data, score_segments
from tfpref.data.tokenizer import BOS_ID, CONTROL_TOKENS, EOS_ID, ByteTokenizer
from tfpref.objectives import OBJECTIVES
from tfpref.scorers import get_scorer

from helpers import tiny_config

ALIGNED_ID, MISALIGNED_ID = CONTROL_TOKENS["<|aligned|>"], CONTROL_TOKENS["<|misaligned|>"]


def write_pep8_corpus(directory, functions=240):
    """Functions whose middle line is PEP 8 clean (even i) or not (odd i: E225 around '=')."""
    path = directory / "pep8_corpus.py"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(functions):
            body = f"    total = value * {i % 7}\n" if i % 2 == 0 else f"    total=value*{i % 7}\n"
            f.write(f"def function_{i}(value):\n{body}    return total\n\n\n")
    return str(path)


def test_encode_scored_chunk_layout():
    ids, scores, lengths = encode_scored_chunk(["ab\n", "c\n"], np.array([0.0, 0.5]),
                                               prefix_ids=np.array([ALIGNED_ID, MISALIGNED_ID]))
    text = ByteTokenizer().encode("ab\nc\n").tolist()
    assert ids.tolist() == [BOS_ID, ALIGNED_ID, *text[:3], MISALIGNED_ID, *text[3:], EOS_ID]
    assert scores.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    assert lengths.tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2]
    no_prefix, _, _ = encode_scored_chunk(["ab\n", "c\n"], np.array([0.0, 0.5]), np.array([-1, ALIGNED_ID]))
    assert no_prefix.tolist() == [BOS_ID, *text[:3], ALIGNED_ID, *text[3:], EOS_ID]


def test_segments_at_each_granularity(tmp_path):
    documents = [["x = 1\ny=2\n", "z = 3\n"]]
    scorer = get_scorer("pep8")
    lines = score_segments(documents, scorer, "line", show_progress=False)
    assert [segments for segments, _ in lines] == [["x = 1\n", "y=2\n"], ["z = 3\n"]]
    np.testing.assert_allclose(lines[0][1], [0.0, 0.25])
    chunks = score_segments(documents, scorer, "chunk", show_progress=False)
    np.testing.assert_allclose([s[0] for _, s in chunks], [1 / 10, 0.0])
    whole = score_segments(documents, scorer, "document", show_progress=False)
    np.testing.assert_allclose([s[0] for _, s in whole], [1 / 16, 1 / 16])


def test_filter_drops_misaligned_training_lines_only(tmp_path):
    config = tiny_config(tmp_path / "run", write_pep8_corpus(tmp_path), objective="filter", segment="line")
    loaded = load_scored_token_data(config, OBJECTIVES["filter"], show_progress=False)
    train_text = ByteTokenizer().decode(loaded["train"].stream)
    validation_text = ByteTokenizer().decode(loaded["validation"].stream)
    assert "total=value" not in train_text and "total = value" in train_text
    assert "total=value" in validation_text  # held-out data is never filtered
    assert np.all(loaded["train"].scores <= config.feedback.filter_threshold)


def test_conditional_data_marks_each_line_and_batches_carry_scores(tmp_path):
    config = tiny_config(tmp_path / "run", write_pep8_corpus(tmp_path), objective="conditional",
                         segment="line", drop_control_fraction=0.0)
    data = load_scored_token_data(config, OBJECTIVES["conditional"], show_progress=False)["train"]
    stream = data.stream
    controls = np.isin(stream, [ALIGNED_ID, MISALIGNED_ID])
    assert np.array_equal(stream[np.flatnonzero(controls)] == MISALIGNED_ID, data.scores[controls] > 0)
    # Every line starts with a control token: it follows BOS or a newline.
    newline = ByteTokenizer().encode("\n")[0]
    previous = stream[np.flatnonzero(controls) - 1]
    assert np.all((previous == BOS_ID) | (previous == newline))
    batch = example_gatherer(data)(tf.constant([0, 1]), tf.constant([0, 1]))
    np.testing.assert_allclose(batch["token_scores"][0], data.scores[:33])
    assert batch["segment_lengths"].shape == (2, 33)


def test_document_granularity_gives_every_chunk_its_file_score(tmp_path):
    config = tiny_config(tmp_path / "run", write_pep8_corpus(tmp_path), objective="rwr", segment="document")
    data = load_scored_token_data(config, OBJECTIVES["rwr"], wanted=("train",), show_progress=False)["train"]
    # The single file was cut into chunks that are documents of their own: one score each.
    starts = np.flatnonzero(data.stream == BOS_ID)
    for start, end in zip(starts[:20], starts[1:21]):
        assert len(set(data.scores[start:end].tolist())) == 1
    assert EOS_ID in data.stream
