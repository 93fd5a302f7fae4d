"""The `tfpref` command: `tfpref train | evaluate | preferences | preset | serve ...` (`tfpref --help`).

train.py and evaluate.py are the same commands as `tfpref train` and `tfpref evaluate`.
TensorFlow prints start-up noise on CPU-only machines unless it is imported in a particular way
(tfpref.runtime), and --verbose asks for that noise: so the decision is made here, from the
command line, before any module that imports TensorFlow is loaded. That is why the subcommands are
imported inside `main`.
"""
import os
import sys

from tfpref.runtime import import_tensorflow_quietly

COMMANDS = {
    "train": "Train (or resume) a run: pretraining, feedback objectives, reward models, DPO, RL.",
    "evaluate": "Evaluate a run on a held-out split or a file, or export it as a SavedModel.",
    "preferences": "Preference data: make (simulated annotator), export for raters, import labels.",
    "preset": "Write a randomly initialised keras-hub causal LM preset, for small experiments.",
    "serve": "Serve a run's export over TensorFlow Serving's REST API (python -m tfpref.serve).",
}

USAGE = "usage: tfpref {train,evaluate,preferences,preset,serve} ... [--help]\n\n" + "\n".join(
    f"  {name:<12} {text}" for name, text in COMMANDS.items()) + "\n"


def main(argv=None):
    """Entry point of the `tfpref` console command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"error: unknown command '{command}' (choose from {', '.join(COMMANDS)})\n")
        return 2
    if "--verbose" in rest:
        os.environ["TFPREF_VERBOSE"] = "1"
    import_tensorflow_quietly()
    # Imported here, after the TensorFlow import above: see the module docstring.
    if command == "train":
        from tfpref.cli.train import main as command_main
    elif command == "evaluate":
        from tfpref.cli.evaluate import main as command_main
    elif command == "preferences":
        from tfpref.cli.preferences import main as command_main
    elif command == "serve":
        from tfpref.cli.serve import main as command_main
    else:
        from tfpref.cli.preset import main as command_main
    return command_main(rest)


def train_main(argv=None):
    """`tfpref train`, as train.py runs it."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


def evaluate_main(argv=None):
    """`tfpref evaluate`, as evaluate.py runs it."""
    return main(["evaluate", *(sys.argv[1:] if argv is None else argv)])
