"""Shared helpers for tests: a tiny corpus, tiny model/training flags, TensorBoard reading."""
import contextlib
import glob
import io
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests pick their objective; most use plain MLE (the CLI's default job is conditional training).
# No XLA: compiling costs seconds per function and shape, more than a tiny run takes; the tests of
# training, resuming and sampling under XLA ask for it (--jit_compile, jit_compile=True).
TINY_FLAGS = ["--objective", "mle", "--d_model", "32", "--num_layers", "2", "--num_heads", "2", "--ff_dim", "64",
              "--seq_len", "32", "--batch_size", "4", "--learning_rate", "3e-3", "--warmup_steps", "2",
              "--eval_batches", "2", "--no_progress", "--no-export", "--no-jit_compile"]


def write_tiny_corpus(directory, functions=300):
    """A few KB of Python-like text as one file; returns its path."""
    path = os.path.join(directory, "tiny_corpus.py")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(functions):
            f.write(f"def function_{i}(value):\n    total = value * {i % 7} + {i}\n    return total\n\n")
    return path


def tiny_config(model_dir, data, **overrides):
    """A RunConfig for a tiny, fast run; overrides are `section.field`-free field names."""
    from tfpref.config import RunConfig

    config = RunConfig(model_dir=str(model_dir))
    config.data.data, config.data.seq_len = str(data), 32
    config.model.d_model, config.model.num_layers, config.model.num_heads, config.model.ff_dim = 32, 2, 2, 64
    config.train.batch_size, config.train.learning_rate, config.train.warmup_steps = 4, 3e-3, 2
    config.train.train_steps, config.train.objective = 6, "mle"
    config.runtime.check_samples = 8  # conditional runs' closing check: a few samples are enough here
    config.runtime.export = False  # as TINY_FLAGS: the export tests ask for it
    config.runtime.jit_compile = False  # as TINY_FLAGS
    config.runtime.eval_batches, config.runtime.log_every = 2, 2
    for key, value in overrides.items():
        section = next(s for s in (config.data, config.model, config.train, config.feedback, config.align,
                                     config.runtime)
                       if hasattr(s, key))
        setattr(section, key, value)
    return config


def run_train(args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def run_cli_in_process(main, args):
    """`train.py args` (main=train_main) or `evaluate.py args` (evaluate_main) run in this process,
    as a CompletedProcess: exit code, and stdout/stderr as Python and the C++ runtime write them.
    For tests of what a command does, not of starting one: a new interpreter with TensorFlow
    costs ~8 s. The tests that need a real process (signals, clean console, fresh devices) keep it."""
    sys.stdout.flush()
    sys.stderr.flush()
    python_out, python_err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        saved = os.dup(1), os.dup(2)
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(python_out), contextlib.redirect_stderr(python_err):
                try:
                    code = main(list(args))
                except SystemExit as e:  # argparse's own errors and --help
                    code = e.code
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        fd_out.seek(0)
        fd_err.seek(0)
        stdout = python_out.getvalue() + fd_out.read().decode("utf-8", "replace")
        stderr = python_err.getvalue() + fd_err.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(["in-process", *args], code, stdout, stderr)


def train_in_process(args):
    """The run `train.py args` makes, trained in this process (for runs whose CLI process is not
    what a test checks: a process start costs seconds); returns the train result."""
    from tfpref.cli.train import build_train_parser, config_from_args
    from tfpref.training.run import train

    return train(config_from_args(build_train_parser().parse_args(args)), show_progress=False)


def scalar_events(directory):
    """{tag: [value per event]} of the TensorBoard files in `directory` (None for text)."""
    import tensorflow as tf

    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)) if
                                                        value.metadata.plugin_data.plugin_name == "scalars"
                                                        else None)
    return values
