"""Labeled text for classification: JSONL {text, label}, or the default PEP 8 labels.

With `--data stdlib` each chunk of the standard library is labelled `pep8_clean` (no pycodestyle
violation) or `pep8_violations`, so classification works offline with no labelled file.
"""
from tfpref.data.corpus import chunk_text, jsonl_records, load_splits, split_of
from tfpref.errors import UserError, location

PEP8_CLASSES = ("pep8_clean", "pep8_violations")


def pep8_labels(chunks):
    from tfpref.scorers.pep8 import pep8_violations_many

    return [PEP8_CLASSES[count > 0] for count in pep8_violations_many(chunks)]


def _labeled_records(path, text_field, label_field):
    for number, record in jsonl_records(path):
        for field, kinds in ((text_field, (str,)), (label_field, (str, int))):
            if field not in record:
                raise UserError(f"{location(path, number, field)} is missing")
            if not isinstance(record[field], kinds) or isinstance(record[field], bool):
                raise UserError(f"{location(path, number, field)} has the wrong type "
                                f"({type(record[field]).__name__})")
        yield number, record[text_field], str(record[label_field])


def load_labeled_splits(data_config):
    """{split: (texts, labels)} and the sorted class names."""
    splits = {name: ([], []) for name in ("train", "validation", "test")}
    if data_config.data == "stdlib":
        chunk_splits = load_splits("stdlib", max_chunk_chars=data_config.max_chunk_chars)
        for name, chunks in chunk_splits.items():
            splits[name] = (chunks, pep8_labels(chunks))
    elif data_config.data.endswith(".jsonl"):
        for number, text, label in _labeled_records(data_config.data, data_config.text_field,
                                                  data_config.label_field):
            for chunk in chunk_text(text, data_config.max_chunk_chars)[:1]:  # one example per record
                texts, labels = splits[split_of(f"line:{number}")]
                texts.append(chunk)
                labels.append(label)
    else:
        raise UserError(f"--data {data_config.data}: classification needs a .jsonl file with "
                        f"'{data_config.text_field}' and '{data_config.label_field}' fields, or 'stdlib'")
    classes = sorted(set(splits["train"][1]))
    if len(classes) < 2:
        raise UserError(f"--data {data_config.data}: the training split has {len(classes)} class(es); "
                        f"classification needs at least 2")
    return splits, classes
