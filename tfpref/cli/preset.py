"""`tfpref preset`: write a randomly initialised keras-hub causal LM preset (tfpref.models.keras_hub_init)."""
import argparse
import json
import sys

from tfpref.cli.common import OneLineErrorParser, add_output_flags, run_cli
from tfpref.errors import UserError
from tfpref.models import keras_hub_init


def build_parser():
    parser = OneLineErrorParser(
        prog="tfpref preset", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write a randomly initialised keras-hub causal LM preset for small experiments; train it "
                    "with --model keras_hub --preset OUTPUT.")
    group = parser.add_argument_group("preset")
    group.add_argument("--output", required=True, help="Directory to write the preset to (new or empty).")
    group.add_argument("--source", default=None,
                       help="A preset (directory or name) whose architecture and tokenizer to take; its weights are "
                            "not used. Default: a GPT-2 with a byte-level tokenizer (no vocabulary file needed).")
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="Change a field of the backbone config, e.g. --set num_layers=2 --set hidden_dim=64 "
                            "(VALUE is JSON; repeat the flag for several fields).")
    group.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    add_output_flags(parser)
    return parser


def parse_overrides(pairs):
    """{field: value} of FIELD=VALUE strings, VALUE read as JSON (a bare word stays a string)."""
    overrides = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise UserError(f"--set {pair}: expected FIELD=VALUE")
        try:
            overrides[field] = json.loads(value)
        except ValueError:
            overrides[field] = value
    return overrides


def main(argv=None):
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _main(argv):
    args = build_parser().parse_args(argv)
    summary = keras_hub_init.random_preset(args.output, args.source, parse_overrides(args.set), args.seed)
    print(json.dumps(summary))
