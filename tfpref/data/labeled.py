"""Labeled text for classification: JSONL {text, label}, or the default PEP 8 labels.

With `--data stdlib` each chunk of the standard library is labelled `pep8_clean` (no pycodestyle
violation) or `pep8_violations`, so classification works offline with no labelled file.
"""
from tfpref.data.corpus import chunk_text, jsonl_records, load_splits
from tfpref.data.splits import SPLITS, document_split, explicit_split, roles
from tfpref.errors import UserError, location
from tfpref.scorers.pep8 import pep8_violations_many

PEP8_CLASSES = ("pep8_clean", "pep8_violations")


def pep8_labels(chunks):
    return [PEP8_CLASSES[count > 0] for count in pep8_violations_many(chunks)]


def _labeled_records(path, text_field, label_field):
    for number, record in jsonl_records(path):
        for field, kinds in ((text_field, (str,)), (label_field, (str, int))):
            if field not in record:
                raise UserError(f"{location(path, number, field)} is missing")
            if not isinstance(record[field], kinds) or isinstance(record[field], bool):
                raise UserError(f"{location(path, number, field)} has the wrong type "
                                f"({type(record[field]).__name__})")
        yield number, record


def _jsonl_examples(data_config):
    """(split, text, label) of each example of a labelled JSONL --data (and --validation_data); any
    other --data but stdlib is a UserError."""
    for path, role in roles(data_config.data, data_config.validation_data):
        flag = "--data" if role != "validation" else "--validation_data"
        if not path.endswith(".jsonl"):
            raise UserError(f"{flag} {path}: classification needs a .jsonl file with "
                            f"'{data_config.text_field}' and '{data_config.label_field}' fields, or 'stdlib'")
        for number, record in _labeled_records(path, data_config.text_field, data_config.label_field):
            text, label = record[data_config.text_field], str(record[data_config.label_field])
            split = explicit_split(path, number, record) or (
                document_split(f"line:{number}") if role == "data" else role)
            for chunk in chunk_text(text, data_config.max_chunk_chars)[:1]:  # one example per record (none if empty)
                yield split, chunk, label


def _classes(data_config, train_labels):
    classes = sorted(set(train_labels))
    if len(classes) < 2:
        raise UserError(f"--data {data_config.data}: the training split has {len(classes)} class(es); "
                        f"classification needs at least 2")
    return classes


def labeled_classes(data_config):
    """The sorted class names of the training split, as `load_labeled_splits` finds them: what a
    classification run's config.classes holds. Reads the data and nothing else."""
    if data_config.data == "stdlib":
        # Labelling the whole library takes pycodestyle a minute: stop once every class has turned up.
        seen = set()
        for chunk in load_splits("stdlib", max_chunk_chars=data_config.max_chunk_chars,
                                 validation_data=data_config.validation_data)["train"]:
            seen.update(pep8_labels([chunk]))
            if len(seen) == len(PEP8_CLASSES):
                break
        return _classes(data_config, seen)
    return _classes(data_config, [label for split, _, label in _jsonl_examples(data_config) if split == "train"])


def labeled_classes_of(data_config, splits):
    """The sorted class names of the training split of `load_labeled_splits`' result."""
    return _classes(data_config, splits["train"][1])


def load_labeled_splits(data_config):
    """{split: (texts, labels)}."""
    splits = {name: ([], []) for name in SPLITS}
    if data_config.data == "stdlib":
        chunk_splits = load_splits("stdlib", max_chunk_chars=data_config.max_chunk_chars,
                                   validation_data=data_config.validation_data)
        for name, chunks in chunk_splits.items():
            splits[name] = (chunks, pep8_labels(chunks))
    else:
        for split, text, label in _jsonl_examples(data_config):
            splits[split][0].append(text)
            splits[split][1].append(label)
    return splits
