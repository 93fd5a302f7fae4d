import os


from tfpref.data import corpus
from tfpref.data.corpus import chunk_text, load_documents, load_splits
from tfpref.data.splits import document_split as split_of

PYTHON_SOURCE = '''"""Module doc."""
import os


def first(x):
    return x + 1


@decorator
@other(1)
class Second:
    def method(self):
        pass


async def third():
    await thing()
'''


def test_chunks_cut_at_top_level_def_and_class_keeping_decorators():
    chunks = chunk_text(PYTHON_SOURCE, max_chars=10_000)
    assert "".join(chunks) == PYTHON_SOURCE
    assert [c.splitlines()[0] for c in chunks] == ['"""Module doc."""', "def first(x):", "@decorator",
                                                   "async def third():"]
    assert "    def method(self):" in chunks[2]  # nested defs stay inside their class


def test_chunks_respect_max_length_and_still_reassemble():
    text = PYTHON_SOURCE * 5 + "x = '" + "y" * 300 + "'\n"
    chunks = chunk_text(text, max_chars=64)
    assert "".join(chunks) == text
    assert max(len(c) for c in chunks) <= 64


def test_split_is_a_stable_hash_with_roughly_90_5_5_proportions():
    keys = [f"pkg/module_{i}.py" for i in range(4000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    assert 0.87 < splits.count("train") / len(keys) < 0.93
    assert splits.count("validation") > 100 and splits.count("test") > 100


def test_stdlib_corpus_is_read_at_run_time_without_site_packages():
    documents = load_documents("stdlib")
    keys = {d.key for d in documents}
    assert "os.py" in keys and os.path.join("json", "decoder.py") in keys
    assert not any("site-packages" in k for k in keys)
    assert len(documents) > 1000


def test_directory_and_glob_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("never\n", encoding="utf-8")
    by_dir = sorted(d.text for d in load_documents(str(tmp_path)))
    by_glob = sorted(d.text for d in load_documents(str(tmp_path / "**" / "*.txt")))
    assert by_dir == by_glob == ["alpha\n", "beta\n"]


def test_jsonl_corpus_reads_the_named_field_and_ignores_others(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"content": "one", "id": 1}\n\n{"content": "two", "source": "x"}\n', encoding="utf-8")
    assert [d.text for d in load_documents(str(path), text_field="content")] == ["one", "two"]


def test_single_text_file_is_split_by_chunk_so_every_split_gets_data(tmp_path):
    path = tmp_path / "big.py"
    path.write_text("".join(f"def f{i}():\n    return {i}\n\n" for i in range(400)), encoding="utf-8")
    splits = load_splits(str(path), max_chunk_chars=4096)
    assert all(splits[name] for name in corpus.SPLITS)
    assert sum(len(v) for v in splits.values()) == 400
