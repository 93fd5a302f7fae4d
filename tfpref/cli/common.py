"""What every tfpref command shares: one-line errors, exit codes, --verbose and --debug."""
import argparse
import sys
import tempfile
import traceback

from tfpref.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def add_output_flags(parser):
    group = parser.add_argument_group("output")
    group.add_argument("--verbose", action="store_true", help="Show TensorFlow's own log output.")
    group.add_argument("--debug", action="store_true", help="Show a traceback on errors.")
    return group


def run_cli(main, argv):
    """Run `main(argv)` and turn every failure into one line on stderr and an exit code.

    Bad input (UserError) exits 2. Anything else is a bug: one line names it, the traceback goes to
    a file (or to stderr with --debug), and the exit code is 1.
    """
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except UserError as e:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: no bare traceback for users
        summary = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        if debug:
            traceback.print_exc()
            sys.stderr.write(f"error: internal error, {summary}\n")
            return 1
        with tempfile.NamedTemporaryFile("w", prefix="tfpref-traceback-", suffix=".txt", delete=False) as f:
            traceback.print_exc(file=f)
        sys.stderr.write(f"error: internal error, {summary} (a bug in tfpref; traceback in {f.name})\n")
        return 1
