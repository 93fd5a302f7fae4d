"""Bad input to train.py: one line `error: ...` naming the file/line/flag, exit code 2, no traceback,
and nothing in an existing run directory touched.

Every case runs train.py's entry point in this process (stdout and stderr captured down to the file
descriptors, so TensorFlow's own C++ logging would show); a few run the real `train.py` in a
subprocess too, to show the console of a real command stays one clean line.
"""
import functools
import os
import shutil

import pytest

from tfpref.cli import train_main

from helpers import TINY_FLAGS, run_cli_in_process, run_train, write_tiny_corpus

# The cases below add or override what they test.
TINY = [*TINY_FLAGS, "--train_steps", "2", "--log_every", "1"]
run_in_process = functools.partial(run_cli_in_process, train_main)


def assert_one_line_error(result, *must_contain):
    """Exit code 2 and exactly one non-empty stderr line `error: ...` containing every string given."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, f"exit code {result.returncode}; stderr:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for text in must_contain:
        assert text in line, f"{text!r} not in {line!r}"
    return line


# --- bad-input cases: name -> setup(case_dir, good_corpus) -> (extra args, strings the error must name)

CASES = {}


def case(name):
    def register(setup):
        CASES[name] = setup
        return setup
    return register


def _data_case(name, make):
    """A case whose --data is the path `make(case_dir)` returns; the error must name that path."""
    @case(name)
    def setup(d, corpus):
        path = make(d)
        return ["--data", path], [path]


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


_data_case("missing_path", lambda d: str(d / "no_such_corpus.txt"))
_data_case("empty_file", lambda d: _write_bytes(d / "empty.txt", b""))
_data_case("empty_directory", lambda d: (d / "empty_dir").mkdir() or str(d / "empty_dir"))
_data_case("glob_without_match", lambda d: str(d / "nothing_here_*.py"))


@case("empty_data_flag")
def _(d, corpus):
    return ["--data", ""], ["--data"]


@case("text_file_not_utf8")
def _(d, corpus):
    path = _write_bytes(d / "latin1.py", b"def f():\n    return 1\n# caf\xe9 au lait\n")
    return ["--data", path], [f"{path}:3", "UTF-8"]


@case("not_utf8_file_in_directory")
def _(d, corpus):
    (d / "tree").mkdir()
    write_tiny_corpus(d / "tree", functions=20)  # tiny_corpus.py: read before the bad file
    bad = _write_bytes(d / "tree" / "z_bad.py", b"x = 1\ny = '\xff'\n")
    return ["--data", str(d / "tree")], [f"{bad}:2", "UTF-8"]


@case("dangling_symlink_in_directory")
def _(d, corpus):
    (d / "tree").mkdir()
    write_tiny_corpus(d / "tree", functions=20)
    link = d / "tree" / "z_gone.py"
    os.symlink(d / "deleted.py", link)
    return ["--data", str(d / "tree")], [str(link)]


@case("jsonl_malformed_line")
def _(d, corpus):
    path = _write_bytes(d / "bad.jsonl", b'{"text": "a = 1"}\n{"text": "b = 2"\n{"text": "c"}\n')
    return ["--data", path], [f"{path}:2", "JSON"]


@case("jsonl_missing_text_field")
def _(d, corpus):
    path = _write_bytes(d / "nofield.jsonl", b'{"text": "a = 1"}\n{"text": "b"}\n{"body": "c = 3"}\n')
    return ["--data", path], [f"{path}:3", "'text'", "--text_field"]


@case("jsonl_text_field_not_a_string")
def _(d, corpus):
    path = _write_bytes(d / "notstr.jsonl", b'{"text": "a = 1"}\n{"text": ["b", "c"]}\n')
    return ["--data", path], [f"{path}:2", "'text'", "string"]


@case("text_field_flag_names_a_missing_field")
def _(d, corpus):
    path = _write_bytes(d / "good.jsonl", b'{"text": "a = 1"}\n{"text": "b = 2"}\n')
    return ["--data", path, "--text_field", "content"], [f"{path}:1", "'content'"]


for _flag in ("batch_size", "seq_len", "train_steps", "d_model"):
    for _value in ("0", "-3"):
        CASES[f"{_flag}={_value}"] = (lambda flag, value: lambda d, corpus: (
            [f"--{flag}", value], [f"--{flag}", value]))(_flag, _value)

CASES["d_model_not_divisible_by_num_heads"] = lambda d, corpus: (
    ["--d_model", "18", "--num_heads", "4"], ["--d_model 18", "--num_heads 4"])
CASES["seq_len_above_transformer_maximum"] = lambda d, corpus: (
    ["--model", "transformer", "--seq_len", "4096"], ["--seq_len", "4096"])
CASES["unknown_model"] = lambda d, corpus: (["--model", "gpt5"], ["--model", "gpt5"])
CASES["unknown_objective"] = lambda d, corpus: (["--objective", "dpo_xyz"], ["--objective", "dpo_xyz"])
CASES["unknown_strategy"] = lambda d, corpus: (["--strategy", "tpu_pod"], ["--strategy"])
CASES["non_numeric_int_flag"] = lambda d, corpus: (["--batch_size", "two"], ["--batch_size", "two"])
CASES["unknown_flag"] = lambda d, corpus: (["--bogus_flag", "1"], ["--bogus_flag"])


@case("model_dir_is_a_file")
def _(d, corpus):
    path = _write_bytes(d / "not_a_dir", b"keep me")
    return ["--model_dir", path], ["--model_dir", path]


def run_case(name, root, run):
    """(result of `run` on the case's command, strings the error must name, model_dir)."""
    corpus = write_tiny_corpus(root)
    d = root / name.replace("=", "_")
    d.mkdir()
    args, expected = CASES[name](d, corpus)
    if "--data" not in args:
        args = [*args, "--data", corpus]
    model_dir = str(d / "run")
    if "--model_dir" in args:
        model_dir = args[args.index("--model_dir") + 1]
    else:
        args = [*args, "--model_dir", model_dir]
    return run([*TINY, *args]), expected, model_dir


def assert_case_failed_cleanly(result, expected, model_dir):
    assert_one_line_error(result, *expected)
    if os.path.isfile(model_dir):
        assert open(model_dir, "rb").read() == b"keep me"
    else:
        assert not os.path.exists(model_dir), f"a failing run created {model_dir}: {os.listdir(model_dir)}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_error_and_exit_code_2(case, tmp_path):
    assert_case_failed_cleanly(*run_case(case, tmp_path, run_in_process))


# A flag argparse rejects, a data error found after TensorFlow is imported, and one with file:line.
# Slow: a new interpreter with TensorFlow each; the cases above check the same errors in this process.
@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown_flag", "missing_path", "jsonl_malformed_line"])
def test_the_real_command_prints_only_the_error_line(case, tmp_path):
    assert_case_failed_cleanly(*run_case(case, tmp_path, run_train))


# --- an existing, finished run directory is never clobbered


def snapshot(directory):
    """{relative path: (bytes, mtime_ns)} of every file, plus the set of sub-directories."""
    files, dirs = {}, set()
    for here, subdirs, names in os.walk(directory):
        dirs.update(os.path.relpath(os.path.join(here, s), directory) for s in subdirs)
        for name in names:
            path = os.path.join(here, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
    return files, dirs


def assert_unchanged(before, after):
    (files_before, dirs_before), (files_after, dirs_after) = before, after
    assert sorted(files_after) == sorted(files_before), "files were added or removed"
    assert dirs_after == dirs_before, "directories were added or removed"
    for name, (data, mtime) in files_before.items():
        assert files_after[name][0] == data, f"{name} was rewritten with different bytes"
        assert files_after[name][1] == mtime, f"{name} was rewritten (mtime changed)"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(command, model_dir, corpus path) of a finished 2-step run."""
    root = tmp_path_factory.mktemp("finished_run")
    corpus = write_tiny_corpus(root)
    model_dir = str(root / "run")
    command = [*TINY, "--data", corpus, "--model_dir", model_dir]
    done = run_in_process(command)
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "train_result.json", "checkpoints/checkpoint", "checkpoints/ckpt-2.index"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    return command, model_dir, corpus


def with_flag(command, flag, value):
    command = list(command)
    command[command.index(flag) + 1] = value
    return command


@pytest.mark.parametrize("change, must_contain", [
    (("--d_model", "64"), ["--model_dir", "model.d_model"]),
    (("--num_layers", "3"), ["--model_dir", "model.num_layers"]),
], ids=["d_model", "num_layers"])
def test_incompatible_config_refuses_to_touch_existing_run_dir(finished_run, change, must_contain):
    command, model_dir, _ = finished_run
    flag, value = change
    bad = with_flag(command, flag, value) if flag in command else [*command, flag, value]
    before = snapshot(model_dir)
    line = assert_one_line_error(run_in_process(bad), *must_contain)
    assert "different run" in line
    assert_unchanged(before, snapshot(model_dir))


def test_missing_data_on_existing_run_dir_leaves_it_untouched(finished_run, tmp_path):
    command, model_dir, _ = finished_run
    before = snapshot(model_dir)
    line = assert_one_line_error(run_in_process(with_flag(command, "--data", str(tmp_path / "gone.py"))))
    assert "data" in line
    assert_unchanged(before, snapshot(model_dir))


def test_bad_value_on_existing_run_dir_leaves_it_untouched(finished_run):
    command, model_dir, _ = finished_run
    before = snapshot(model_dir)
    assert_one_line_error(run_in_process(with_flag(command, "--batch_size", "0")), "--batch_size")
    assert_unchanged(before, snapshot(model_dir))


def test_corpus_turned_bad_on_resume_leaves_run_dir_untouched(finished_run):
    """Same, compatible command, but the corpus itself is now broken: the error names file:line."""
    command, model_dir, corpus = finished_run
    before = snapshot(model_dir)
    original = open(corpus, "rb").read()
    try:
        with open(corpus, "ab") as f:
            f.write(b"def broken():\n    return '\xff'\n")
        line_number = original.count(b"\n") + 2
        assert_one_line_error(run_in_process(command), f"{corpus}:{line_number}", "UTF-8")
    finally:
        with open(corpus, "wb") as f:
            f.write(original)
    assert_unchanged(before, snapshot(model_dir))


def test_rerunning_the_same_command_on_a_finished_run_succeeds(finished_run, tmp_path):
    command, model_dir, _ = finished_run
    copy = str(tmp_path / "run")
    shutil.copytree(model_dir, copy)  # keep the shared run pristine for the other tests
    before, _ = snapshot(copy)
    result = run_in_process(with_flag(command, "--model_dir", copy))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Resuming" in result.stdout and "from step 2" in result.stdout
    after, _ = snapshot(copy)
    for name in ("checkpoints/checkpoint", "checkpoints/ckpt-2.index",
                 "checkpoints/ckpt-2.data-00000-of-00001", "train_result.json"):
        assert after[name][0] == before[name][0], f"{name} changed on a no-op re-run"
    assert after["config.json"][0].replace(copy.encode(), model_dir.encode()) == before["config.json"][0]
