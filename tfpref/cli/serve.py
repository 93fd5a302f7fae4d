"""`tfpref serve` (`python -m tfpref.serve`): serve a run's export over TensorFlow Serving's REST API."""
import argparse
import os
import sys

from tfpref.cli.common import OneLineErrorParser, add_output_flags, run_cli
from tfpref.errors import UserError
from tfpref.serve.server import serve
from tfpref.serve.settings import ServeSettings

TOKEN_VARIABLE = "TFPREF_SERVE_TOKEN"


def build_parser():
    defaults = ServeSettings()
    parser = OneLineErrorParser(
        prog="python -m tfpref.serve" if sys.argv[0].endswith(os.path.join("serve", "__main__.py")) else "tfpref serve",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve a run's exported SavedModel over TensorFlow Serving's REST API "
                    "(GET /v1/models/NAME, GET /v1/models/NAME/metadata, POST /v1/models/NAME:predict), with a "
                    "chat page at /, and optionally labelling (/label) and A/B (/ab) pages. The latest "
                    "export version is served, and a newer one is loaded without a restart. Concurrent requests "
                    "are batched into one model call. Stop with Ctrl-C.")
    model = parser.add_argument_group("model")
    model.add_argument("--model_dir", default="",
                       help="Run directory whose export/ to serve, or an export base itself (a directory of "
                            "numeric version directories holding saved_model.pb).")
    model.add_argument("--model_name", default=defaults.model_name,
                       help="Name --model_dir is served under: /v1/models/NAME.")
    model.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                       help="Serve another model, DIR being a run directory or export base (repeat the flag for "
                            "more), e.g. two policies to compare.")
    model.add_argument("--poll_seconds", type=float, default=defaults.poll_seconds,
                       help="How often to look for a new export version to load.")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=defaults.host,
                        help="Address to listen on; 0.0.0.0 for every interface (then set a token).")
    server.add_argument("--port", type=int, default=defaults.port, help="Port to listen on; 0 picks a free one.")
    server.add_argument("--token", default=None,
                        help=f"Require 'Authorization: Bearer TOKEN' on every API request. Better set "
                             f"${TOKEN_VARIABLE} instead (read when --token is not given): other users of the "
                             f"machine can read a command line. Default: no token.")
    server.add_argument("--access_log", action="store_true", help="Log one line per request.")
    limits = parser.add_argument_group("limits", "Requests over a limit get HTTP 400 (413 for the body), "
                                                 "and 503 when the server is too busy.")
    limits.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes,
                        help="Longest request body, in bytes.")
    limits.add_argument("--max_new_tokens", type=int, default=defaults.max_new_tokens,
                        help="Largest max_new_tokens a request may ask for.")
    limits.add_argument("--max_batch", type=int, default=defaults.max_batch,
                        help="Most rows in one request, and in one batched model call.")
    limits.add_argument("--queue_size", type=int, default=defaults.queue_size,
                        help="Requests waiting per model before new ones are refused.")
    limits.add_argument("--queue_timeout_seconds", type=float, default=defaults.queue_timeout_seconds,
                        help="A request not started within this many seconds is refused.")
    limits.add_argument("--reproducible_sampling", action="store_true",
                        help="Run sampled requests (temperature > 0) alone, not batched with others, so the same "
                             "seed always gives the same samples (greedy requests are batched either way).")
    labelling = parser.add_argument_group(
        "labelling", "The labelling page, /label: people choose between two completions, order k of them, or rate "
                     "one; each label is appended (and fsynced) to --label_output in tfpref's pairwise, ranking or "
                     "rating format, once per item; a restarted server resumes where it stopped.")
    labelling.add_argument("--label_input", default="", metavar="FILE",
                           help="Items to label: a file of 'tfpref preferences export' (CSV or JSONL), a preference "
                                "JSONL file (pairs and rankings are shown in a shuffled order), or prompts (JSONL "
                                "with a 'prompt' field, or text, one a line) whose completions are sampled from the "
                                "model.")
    labelling.add_argument("--label_output", default="", metavar="FILE",
                           help="JSONL file the labels are appended to (created if missing).")
    labelling.add_argument("--label_task", default=defaults.label_task, choices=["pair", "rank", "rate"],
                           help="For prompts alone: choose between 2 completions, rank --label_k, or rate one.")
    labelling.add_argument("--label_k", type=int, default=defaults.label_k, help="Completions to rank per prompt.")
    labelling.add_argument("--rating_scale", type=int, default=defaults.rating_scale,
                           help="Ratings go from 1 to this.")
    labelling.add_argument("--label_max_new_tokens", type=int, default=defaults.label_max_new_tokens,
                           help="Length of the completions sampled for prompts alone.")
    labelling.add_argument("--label_temperature", type=float, default=defaults.label_temperature,
                           help="Temperature of the completions sampled for prompts alone.")
    ab = parser.add_argument_group(
        "A/B test", "The A/B pages, /ab and /ab/report: each visitor request gets a completion from one of two "
                    "models at random; impressions and clicks go to --ab_log in tfpref's clicks format, and the "
                    "report gives each model's click-through rate with a 95% interval and the test's p-value.")
    ab.add_argument("--ab", nargs=2, default=(), metavar=("DIR_A", "DIR_B"),
                    help="The two models: run directories or export bases (also served as /v1/models/a and b).")
    ab.add_argument("--ab_log", default="", metavar="FILE",
                    help="JSONL file of impressions and clicks (clicks format; its journal is FILE's stem + "
                         ".events.jsonl).")
    ab.add_argument("--ab_max_new_tokens", type=int, default=defaults.ab_max_new_tokens,
                    help="Length of an A/B completion.")
    ab.add_argument("--ab_temperature", type=float, default=defaults.ab_temperature,
                    help="Temperature of A/B completions.")
    ab.add_argument("--ab_top_p", type=float, default=defaults.ab_top_p, help="Top-p of A/B completions.")
    add_output_flags(parser)
    return parser


def settings_from_args(args):
    models = {}
    for pair in args.model:
        name, sep, directory = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--model {pair}: expected NAME=DIR")
        if name in models:
            raise UserError(f"--model {pair}: model '{name}' is given twice")
        models[name] = directory
    token = os.environ.get(TOKEN_VARIABLE, "") if args.token is None else args.token
    settings = ServeSettings(
        model_dir=args.model_dir, model_name=args.model_name, models=models, host=args.host, port=args.port,
        token=token, max_body_bytes=args.max_body_bytes, max_new_tokens=args.max_new_tokens,
        max_batch=args.max_batch, queue_size=args.queue_size, queue_timeout_seconds=args.queue_timeout_seconds,
        poll_seconds=args.poll_seconds, reproducible_sampling=args.reproducible_sampling,
        access_log=args.access_log, label_input=args.label_input, label_output=args.label_output,
        label_task=args.label_task, label_k=args.label_k, rating_scale=args.rating_scale,
        label_max_new_tokens=args.label_max_new_tokens, label_temperature=args.label_temperature,
        ab=tuple(args.ab), ab_log=args.ab_log, ab_max_new_tokens=args.ab_max_new_tokens,
        ab_temperature=args.ab_temperature, ab_top_p=args.ab_top_p)
    settings.validate()
    return settings


def _main(argv):
    serve(settings_from_args(build_parser().parse_args(argv)))
    return 0


def main(argv=None):
    return run_cli(_main, sys.argv[1:] if argv is None else argv)
