"""Training data with human feedback: segments, their misalignment scores, and per-token streams.

The pretraining-with-feedback objectives (Korbak et al. 2023) see each chunk as a sequence of
*segments*, each with a misalignment score from a scorer (`--scorer`, cached on disk):
  * `document`: every chunk of a source file carries the whole file's score;
  * `chunk`: each chunk (a top-level def/class, at most --max_chunk_chars) is one segment;
  * `line`: each line is a segment, scored in the context of its chunk (the paper's choice for
    PEP 8, where it split code into lines).
The token stream is built as in `pipeline.py` (BOS chunk EOS ...) by the run's tokenizer (bytes, or a
keras-hub preset's), with two more streams beside it: each token's segment score, and (for
preference vectors) its segment's length in bytes. Each segment is tokenized on its own, so
segment boundaries are token boundaries and a control token can go before any segment (a preset's
tokens may span what were two segments in the whole text).
Objectives may drop segments of the training split (filtering) and put a control token before
each segment (conditional training); these hooks are classmethods of the objective.
"""
import numpy as np

from tfpref.data.corpus import load_split_documents
from tfpref.data.splits import ALL, select
from tfpref.data.pipeline import TokenData, pack_windows
from tfpref.data.thresholds import check_aligned_fraction, resolve_threshold
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError
from tfpref.scorers import get_scorer
from tfpref.scorers.cache import cached_scores


def score_segments(documents, scorer, granularity, show_progress=True):
    """[(segments, scores)] for every chunk of `documents` ([[chunk, ...] per document]).

    `segments` are strings that concatenate back to the chunk; `scores` float64 [len(segments)].
    """
    chunks = [chunk for document in documents for chunk in document]
    if granularity == "line":
        line_scores = cached_scores(scorer, "lines", chunks, show_progress)
        return [(chunk.splitlines(keepends=True), np.asarray(scores, np.float64))
                for chunk, scores in zip(chunks, line_scores)]
    if granularity == "chunk":
        scores = cached_scores(scorer, "text", chunks, show_progress)
        return [([chunk], scores[i:i + 1]) for i, chunk in enumerate(chunks)]
    document_scores = cached_scores(scorer, "text", ["".join(d) for d in documents], show_progress)
    return [([chunk], np.array([score])) for document, score in zip(documents, document_scores)
            for chunk in document]


def encode_scored_chunk(segments, scores, prefix_ids=None, tokenizer=None, segment_ids=None):
    """(ids, token scores, token segment lengths) of BOS seg_1 ... seg_n EOS.

    `prefix_ids` (int [n], -1 = none) puts a control token before each segment; it carries its
    segment's score. BOS carries the first segment's score, EOS the last one's. Segment lengths are
    in bytes, whatever the tokens. `tokenizer` is the model's (default: bytes); `segment_ids` are the
    segments already tokenized by it (default: tokenized here).
    """
    tokenizer = tokenizer or ByteTokenizer()
    if segment_ids is None:
        segment_ids = tokenizer.encode_all(segments)
    counts = np.array([len(ids) for ids in segment_ids], np.int64)
    lengths = np.array([len(s.encode("utf-8")) for s in segments], np.int64)
    ids = np.concatenate(segment_ids).astype(np.int32) if len(segment_ids) else np.zeros([0], np.int32)
    token_scores = np.repeat(scores, counts)
    token_lengths = np.repeat(lengths, counts)
    if prefix_ids is not None:
        where = np.flatnonzero(np.asarray(prefix_ids) >= 0)
        at = (np.cumsum(counts) - counts)[where]
        ids = np.insert(ids, at, np.asarray(prefix_ids)[where])
        token_scores = np.insert(token_scores, at, scores[where])
        token_lengths = np.insert(token_lengths, at, lengths[where])
    ids = np.concatenate([[tokenizer.bos_id], ids, [tokenizer.eos_id]]).astype(np.int32)
    token_scores = np.concatenate([[scores[0]], token_scores, [scores[-1]]]).astype(np.float32)
    token_lengths = np.concatenate([[lengths[0]], token_lengths, [lengths[-1]]]).astype(np.int32)
    return ids, token_scores, token_lengths


def build_scored_token_data(scored_chunks, seq_len, prefixes=None, tokenizer=None):
    """Packed TokenData with `scores` and `segment_lengths` streams beside the token stream, tokenized
    by `tokenizer` (default: bytes)."""
    tokenizer = tokenizer or ByteTokenizer()
    # Every segment in one call: a preset's tokenizer runs in TensorFlow, at a cost per call.
    flat_ids = tokenizer.encode_all([segment for segments, _ in scored_chunks for segment in segments])
    ends = np.cumsum([len(segments) for segments, _ in scored_chunks])
    parts = [encode_scored_chunk(segments, scores, None if prefixes is None else prefixes[i], tokenizer,
                                 flat_ids[end - len(segments):end])
             for i, ((segments, scores), end) in enumerate(zip(scored_chunks, ends))]
    if not parts:
        return TokenData(np.zeros([0], np.int32), np.zeros([0], np.int64), np.zeros([0], np.int32),
                         seq_len, scores=np.zeros([0], np.float32), segment_lengths=np.zeros([0], np.int32))
    stream, scores, lengths = (np.concatenate(column) for column in zip(*parts))
    starts, window_lengths = pack_windows(len(stream), seq_len)
    return TokenData(stream, starts, window_lengths, seq_len, scores=scores, segment_lengths=lengths)


def regroup(flat, scored_chunks):
    """Split a flat per-segment array back into one array per chunk."""
    ends = np.cumsum([len(scores) for _, scores in scored_chunks])
    return np.split(np.asarray(flat), ends[:-1]) if len(scored_chunks) else []


def keep_segments(scored_chunks, keep):
    """`scored_chunks` without the segments where the flat bool `keep` is False (empty chunks go)."""
    out = []
    for (segments, scores), kept in zip(scored_chunks, regroup(keep, scored_chunks)):
        if kept.any():
            out.append(([s for s, k in zip(segments, kept) if k], scores[kept]))
    return out


def load_scored_token_data(config, objective_cls, wanted=("train", "validation"), show_progress=True):
    """{split: TokenData with scores} for the `wanted` splits, shaped by the objective's hooks.

    Decides `config.feedback.threshold` in place (tfpref.data.thresholds): from the training split's
    scores with --threshold_percentile, else --threshold, else the scorer's default. An objective
    that trains on the threshold (conditional, unlikelihood) refuses a degenerate one.
    """
    data, feedback = config.data, config.feedback
    scorer, tokenizer = get_scorer(feedback.scorer), tokenizer_for(config)
    documents = load_split_documents(data.data, data.text_field, data.max_chunk_chars, data.validation_data)
    scored_splits = {split: score_segments(select(documents, split), scorer, feedback.segment, show_progress)
                     for split in wanted}
    derived = feedback.threshold_percentile > 0 and ("train" in wanted or feedback.threshold < 0)
    train_scores = None
    if derived or "train" in wanted:
        train = scored_splits["train"] if "train" in wanted else score_segments(
            select(documents, "train"), scorer, feedback.segment, show_progress)
        train_scores = np.concatenate([scores for _, scores in train]) if train else np.zeros([0])
    if derived or feedback.threshold < 0:
        feedback.threshold, source = resolve_threshold(feedback, scorer, train_scores)
    else:
        source = "--threshold"
    if "train" in wanted and len(train_scores) and objective_cls.uses_threshold:
        fraction = check_aligned_fraction(objective_cls.name, train_scores, feedback.threshold, source)
        if show_progress:
            print(f"Threshold {feedback.threshold:.6g} ({source}): {fraction:.1%} of the training segments are "
                  f"aligned", flush=True)
    loaded = {}
    for split in wanted:
        scored = scored_splits[split]
        if not scored:
            loaded[split] = None
            continue
        if split == "train":
            scored = keep_segments(scored, objective_cls.select_segments(config, train_scores))
            if not scored:
                raise UserError(f"--objective {objective_cls.name}: every training segment was filtered out; "
                                f"raise --filter_threshold or --filter_percentile")
        flat = np.concatenate([scores for _, scores in scored])
        rng = np.random.default_rng([config.train.seed, {"train": 0, "validation": 1, "test": 2, ALL: 3}[split]])
        prefixes = objective_cls.segment_prefixes(config, flat, rng, training=split == "train")
        loaded[split] = build_scored_token_data(scored, data.seq_len,
                                                None if prefixes is None else regroup(prefixes, scored), tokenizer)
    return loaded
