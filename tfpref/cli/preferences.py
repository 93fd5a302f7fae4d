"""`tfpref preferences make | export | import`: preference data from a simulated annotator, for
human raters, and back (see tfpref.preferences)."""
import argparse
import json
import os
import sys

from tfpref import preferences
from tfpref.cli.common import OneLineErrorParser, run_cli
from tfpref.data.preferences import load_preferences
from tfpref.errors import UserError
from tfpref.preferences import (check_group_settings, export_for_labelling, import_labelled, make_preferences,
                                write_jsonl)


def build_parser():
    parser = OneLineErrorParser(prog="tfpref preferences", description=preferences.__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="simulate labelled pairs (or rankings) with a policy and a scorer",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    make.add_argument("--policy_dir", required=True, help="Run directory of the policy that samples completions.")
    make.add_argument("--output", required=True, help="JSONL file to write (pairwise, or ranking records).")
    make.add_argument("--num_pairs", type=int, default=1000,
                      help="Records to write: pairs, or rankings with --completions_per_prompt above 2.")
    make.add_argument("--completions_per_prompt", type=int, default=2,
                      help="Completions the annotator judges together: 2 writes pairs (chosen, rejected), "
                           "more writes rankings (completions, ranking; 1 = best).")
    make.add_argument("--scorer", default="pep8", help="Scorer whose minus score is the annotator's hidden reward.")
    make.add_argument("--annotator_temperature", type=float, default=0.01,
                      help="Bradley-Terry temperature of the simulated annotator, in reward units: "
                           "P(a preferred) = sigmoid((r_a - r_b) / T). Lower is a more reliable annotator.")
    make.add_argument("--data", default="stdlib", help="Corpus (or JSONL with 'prompt') the prompts come from.")
    make.add_argument("--split", default="test", help="Split of --data: test is held out from training.")
    make.add_argument("--prompt_chars", type=int, default=64, help="Longest prompt, in characters.")
    make.add_argument("--max_new_tokens", type=int, default=64, help="Longest completion, in tokens.")
    make.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature.")
    make.add_argument("--seed", type=int, default=0, help="Seed of prompts, samples and labels.")
    make.add_argument("--batch_size", type=int, default=64,
                      help="Completions sampled at once (--completions_per_prompt per prompt). Larger is "
                           "faster; the records drawn for a --seed depend on it.")
    make.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    export = commands.add_parser("export", help="write pairs to CSV/JSONL for human raters",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    export.add_argument("--input", required=True, help="Preference JSONL (any format; pairs are derived).")
    export.add_argument("--output", required=True,
                        help="A .csv file (otherwise JSONL) with an empty 'preferred' column.")
    export.add_argument("--seed", type=int, default=0, help="Seed of the A/B order.")
    export.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    imp = commands.add_parser("import", help="read a labelled CSV/JSONL back as pairwise JSONL",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    imp.add_argument("--input", required=True, help="The labelled .csv or .jsonl ('preferred': a or b).")
    imp.add_argument("--output", required=True, help="Pairwise JSONL file to write.")
    imp.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    return parser


def main(argv=None):
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.command == "make":
        if args.num_pairs <= 0 or args.annotator_temperature <= 0:
            raise UserError("--num_pairs and --annotator_temperature must be positive")
        check_group_settings(args.completions_per_prompt, args.batch_size)
        if os.path.exists(args.output) and not args.overwrite:  # before minutes of sampling, not after
            raise UserError(f"--output {args.output} exists; choose another path or pass --overwrite")
        records = make_preferences(args.policy_dir, args.num_pairs, args.scorer, args.annotator_temperature,
                                   args.data, args.split, args.prompt_chars, args.max_new_tokens,
                                   args.temperature, args.seed, args.batch_size, args.completions_per_prompt)
        write_jsonl(args.output, records, args.overwrite)
        written = load_preferences(args.output)
        print(json.dumps({"output": args.output, "records": len(records), "comparisons": len(written.comparisons()),
                          "noise_ceiling": round(written.noise_ceiling(), 4),
                          "annotator_temperature": args.annotator_temperature}))
    elif args.command == "export":
        count = export_for_labelling(args.input, args.output, args.seed, args.overwrite)
        print(f"wrote {count} pairs to {args.output}; fill its 'preferred' column with a or b")
    else:
        written, skipped = import_labelled(args.input, args.output, args.overwrite)
        print(f"wrote {written} labelled pairs to {args.output} ({skipped} unlabelled rows skipped)")
    return 0
