"""Corpora as lists of text chunks, split deterministically into train / validation / test.

Sources, chosen by `--data`:
  * `stdlib` (default): the running CPython's standard library `.py` files, found through
    `sysconfig` at run time, `site-packages` skipped. Never copied into the repository.
  * a `.jsonl` file: one JSON object per line, text under `--text_field`.
  * a text file, a directory (every non-hidden file below it) or a glob pattern of text files.

A document's split comes from a hash of its key (its path relative to the corpus root, or its JSONL
line number), so the split never changes between runs or machines; a JSONL record's own `split`
field and `--validation_data` come first (tfpref.data.splits). Documents are cut into chunks at
top-level `def` / `class` boundaries (decorators stay with their function), at most
`max_chunk_chars` long; chunks are the segments that preference objectives score.
"""
import glob
import json
import os
import sysconfig
from dataclasses import dataclass

from tfpref.data.splits import SPLITS, document_split, explicit_split, roles
from tfpref.errors import UserError, location

_TOP_LEVEL_STARTS = ("def ", "async def ", "class ", "@")


@dataclass(frozen=True)
class Document:
    key: str            # stable identity used for the split
    text: str
    split: str = None   # a JSONL record's own `split` field


def chunk_text(text, max_chars):
    """Cut `text` at top-level def/class lines, then at line ends so no chunk exceeds `max_chars`.

    Concatenating the chunks gives back `text` exactly.
    """
    pieces, current = [], []
    previous_was_decorator = False
    for line in text.splitlines(keepends=True):
        starts_block = line.startswith(_TOP_LEVEL_STARTS)
        if starts_block and current and not previous_was_decorator:
            pieces.append("".join(current))
            current = []
        current.append(line)
        previous_was_decorator = line.startswith("@")
    if current:
        pieces.append("".join(current))
    return [chunk for piece in pieces for chunk in _limit_length(piece, max_chars)]


def _limit_length(piece, max_chars):
    if len(piece) <= max_chars:
        return [piece]
    chunks, current = [], ""
    for line in piece.splitlines(keepends=True):
        while len(line) > max_chars:  # a single overlong line is cut hard
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return chunks


def stdlib_root():
    return sysconfig.get_paths()["stdlib"]


def _stdlib_documents():
    root = stdlib_root()
    paths = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in ("site-packages", "__pycache__"))
        paths += [os.path.join(directory, f) for f in files if f.endswith(".py")]
    for path in sorted(paths):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # a handful of stdlib test files are deliberately not UTF-8
        if text.strip():
            yield Document(os.path.relpath(path, root), text)


def read_utf8(path):
    """Text of `path`; a non-UTF-8 or unreadable file is a UserError naming the file (and line)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{location(path, line)}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None


def jsonl_records(path):
    """(line number, object) for each non-blank line of a JSONL file; bad lines are UserErrors."""
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{location(path, number)}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{location(path, number)}: malformed JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{location(path, number)}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _jsonl_documents(path, text_field):
    for number, record in jsonl_records(path):
        if text_field not in record:
            raise UserError(f"{location(path, number, text_field)} is missing (set --text_field)")
        text = record[text_field]
        if not isinstance(text, str):
            raise UserError(f"{location(path, number, text_field)} must be a string, "
                            f"got {type(text).__name__}")
        yield Document(f"line:{number}", text, explicit_split(path, number, record))


def _text_file_documents(paths, root):
    for path in paths:
        text = read_utf8(path)
        if text.strip():
            yield Document(os.path.relpath(path, root), text)


def _resolve_text_files(spec):
    """(files, root) for a file, directory or glob `spec`."""
    if os.path.isdir(spec):
        files = []
        for directory, subdirs, names in os.walk(spec):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            files += [os.path.join(directory, n) for n in names if not n.startswith(".")]
        if not files:
            raise UserError(f"--data: directory '{spec}' contains no files")
        return sorted(files), spec
    if os.path.isfile(spec):
        return [spec], os.path.dirname(spec) or "."
    matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    if glob.has_magic(spec) and matches:
        return matches, os.path.commonpath([os.path.dirname(p) or "." for p in matches])
    if glob.has_magic(spec):
        raise UserError(f"--data: no files match '{spec}'")
    raise UserError(f"--data: no such file or directory: '{spec}'")


def load_documents(data, text_field="text", max_chunk_chars=4096):
    """All documents of the corpus named by `data` (see module docstring)."""
    if data == "stdlib":
        documents = list(_stdlib_documents())
        source = f"the standard library at {stdlib_root()}"
    elif data.endswith(".jsonl") and os.path.isfile(data):
        documents = list(_jsonl_documents(data, text_field))
        source = data
    else:
        files, root = _resolve_text_files(data)
        documents = list(_text_file_documents(files, root))
        if len(files) == 1 and documents:
            # One file: split its chunks rather than the whole file, or one split gets everything.
            chunks = chunk_text(documents[0].text, max_chunk_chars)
            documents = [Document(f"chunk:{i}", c) for i, c in enumerate(chunks)]
        source = data
    if not documents:
        raise UserError(f"--data: {source} contains no text")
    return documents


def load_split_documents(data, text_field="text", max_chunk_chars=4096, validation_data=""):
    """{split: [[chunk text, ...] of each document, ...]} for train, validation and test; with
    `validation_data`, all of `data` trains and all of that corpus validates."""
    splits = {name: [] for name in SPLITS}
    for path, role in roles(data, validation_data):
        for document in load_documents(path, text_field, max_chunk_chars):
            split = document.split or (document_split(document.key) if role == "data" else role)
            splits[split].append(chunk_text(document.text, max_chunk_chars))
    return splits


def load_splits(data, text_field="text", max_chunk_chars=4096, validation_data=""):
    """{split: [chunk text, ...]} for train, validation and test (see `load_split_documents`)."""
    return {name: [chunk for chunks in documents for chunk in chunks]
            for name, documents in load_split_documents(data, text_field, max_chunk_chars, validation_data).items()}
