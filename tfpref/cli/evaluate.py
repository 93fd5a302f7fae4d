"""`tfpref evaluate` (evaluate.py): a run's metrics on a held-out split or a file, samples, or its export."""
import argparse
import os
import sys

from tfpref.cli.common import OneLineErrorParser, add_output_flags, run_cli
from tfpref.config import RL_OBJECTIVES
from tfpref.errors import UserError
from tfpref.evaluation.generation import SamplingSettings
from tfpref.evaluation.misalignment import MisalignmentSettings
from tfpref.evaluation.policy import PolicyEvalSettings
from tfpref.evaluation.run import METRICS_FILE, evaluate_run, format_report, report_dir
from tfpref.models.quantization import QUANTIZE_MODES
from tfpref.runs import load_config
from tfpref.training.export import export_run


def build_evaluate_parser():
    parser = OneLineErrorParser(
        prog="evaluate.py" if sys.argv[0].endswith("evaluate.py") else "tfpref evaluate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate a run directory's latest checkpoint on a held-out split, or on every record of "
                    "a file (--data). The model, data and objective come from the run's config.json. Writes "
                    "<model_dir>/eval/metrics.json and TensorBoard scalars under <model_dir>/eval "
                    "(<model_dir>/eval/<file stem>/ with --data).")
    parser.add_argument("--model_dir", required=True, help="Run directory to evaluate.")
    parser.add_argument("--split", default=None, choices=["validation", "test"],
                        help="Held-out split of the run's own data. Default: validation.")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="Evaluate every record of FILE (no split of it) instead: a file of the kind the run "
                             "trained on (text or text JSONL for language models, labelled JSONL for classifiers, "
                             "preference JSONL for reward models and DPO, prompts for RL). Reward models report "
                             "pairwise accuracy on pairs and rankings, and on ratings or clicks Pearson's "
                             "correlation between reward and rating plus the accuracy on the pairs the ratings "
                             "imply; DPO runs their implicit-reward accuracy and margin; language models "
                             "perplexity; classifiers precision, recall and F1. Written to "
                             "<model_dir>/eval/<file stem>/. Samples (and a DPO run's comparison with its "
                             "reference) only with an explicit --num_samples or --prompts.")
    parser.add_argument("--group_by", default=None, metavar="FIELD",
                        help="With a JSONL --data: also evaluate the records of each value of FIELD (e.g. source) "
                             "as a file of their own, reported per group beside the overall metrics; records "
                             "without FIELD form the group '(missing)'.")
    parser.add_argument("--batch_size", type=int, default=32, help="Examples per evaluation batch.")
    parser.add_argument("--max_batches", type=int, default=None, help="Stop after this many batches.")
    export = parser.add_argument_group(
        "export", "Instead of evaluating, write the latest checkpoint as a SavedModel in TensorFlow Serving's "
                  "layout, with the signatures of docs/serving.md.")
    export.add_argument("--export", action="store_true", help="Write it to <model_dir>/export/<step>/.")
    export.add_argument("--quantize", default=None, choices=list(QUANTIZE_MODES),
                        help="With --export: write an int8 copy to <model_dir>/export-int8/<step>/ instead, with "
                             "the same signatures (Keras' int8 kernels and embeddings, float activations: 27% of the "
                             "float export's size for the default transformer, the same perplexity; an LSTM's "
                             "recurrent weights stay float). The float model and checkpoint are unchanged.")
    export.add_argument("--no_xla", action="store_true",
                        help="With --export: leave XLA compilation out of the SavedModel, for a TensorFlow Serving "
                             "build without XLA (slower: every shape runs op by op).")
    sampling = parser.add_argument_group(
        "sampling", "Language-model runs also complete prompts: samples go to <model_dir>/eval/samples.jsonl, "
                    "diversity (distinct-1/2, Self-BLEU) and, with references, BLEU and ROUGE-L to the metrics.")
    sampling.add_argument("--num_samples", type=int, default=None,
                          help="Prompts to complete (the first N of --prompts or of the split); 0 skips sampling. "
                               "Default 16; with --data, no sampling unless given (or --prompts), except for RL "
                               "runs, which are evaluated by sampling.")
    sampling.add_argument("--max_new_tokens", type=int, default=None,
                          help="Longest completion, in tokens (bytes). Default 256 (a policy run's own "
                               "--max_new_tokens for policy evaluation).")
    sampling.add_argument("--temperature", type=float, default=None,
                          help="Sampling temperature; 0 is greedy. Default 1.0 (0.7 for --scorer samples).")
    sampling.add_argument("--top_k", type=int, default=0, help="Sample among the k likeliest tokens; 0 is off.")
    sampling.add_argument("--top_p", type=float, default=None,
                          help="Nucleus sampling: the likeliest tokens holding this much probability; 1 is off. "
                               "Default 1.0 (0.9 for --scorer samples).")
    sampling.add_argument("--seed", type=int, default=0, help="Seed of the sampling (same seed, same samples).")
    sampling.add_argument("--prompts", default=None,
                          help="Prompts file: JSONL with 'prompt' and optional 'reference' (or 'completion'), or "
                               "one prompt per line. Default: the first line of each held-out chunk, with the "
                               "rest of the chunk as reference.")
    feedback = parser.add_argument_group(
        "misalignment", "With --scorer: unconditional samples (from BOS; conditioned on <|aligned|> or the "
                        "aligned preference vector for conditional runs) are scored. Reports mean misalignment, "
                        "score_max@25, the fraction of samples scoring above the threshold, the parse rate "
                        "(pep8), KL from --reference_dir's model, and held-out LM loss on aligned and on all "
                        "text. Samples go to "
                        "<model_dir>/eval/unconditional_samples.jsonl.")
    feedback.add_argument("--scorer", default=None,
                          help="pep8, profanity, pii or package.module:function. Default: no misalignment evaluation.")
    feedback.add_argument("--scorer_samples", type=int, default=1024, help="Unconditional samples to score.")
    feedback.add_argument("--threshold", type=float, default=-1.0,
                          help="A sample scoring above this is a violation. Negative: the run's own threshold when "
                               "it trained with this --scorer, else the scorer's default (pep8: 0, profanity: 0.5).")
    feedback.add_argument("--reference_dir", default=None,
                          help="Run directory of the reference model for the KL estimate (e.g. an MLE run).")
    policy = parser.add_argument_group(
        "policy", "Runs that fine-tune a policy (dpo, reinforce, rloo, ppo) are compared with their reference "
                  "(--init_from) on --num_samples held-out prompts: mean reward under the reward model and/or "
                  "--scorer, win-rate against the reference, KL to the reference, and held-out NLL drift. "
                  "Completions go to <model_dir>/eval/policy_samples.jsonl.")
    policy.add_argument("--reward_model", default=None,
                        help="reward_model run directory to judge with. Default: the run's own --reward_model.")
    add_output_flags(parser)
    return parser


def _evaluate(argv):
    args = build_evaluate_parser().parse_args(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {args.batch_size}")
    if args.quantize and not args.export:
        raise UserError(f"--quantize {args.quantize} needs --export: it quantizes the exported SavedModel")
    if args.no_xla and not args.export:
        raise UserError("--no_xla applies to --export only")
    if args.export:
        print(f"SavedModel: {export_run(args.model_dir, quantize=args.quantize, jit_compile=not args.no_xla)}")
        return 0
    if args.data and args.split:
        raise UserError("--split and --data: --data evaluates every record of the file (no split); give one of them")
    if args.group_by and not args.data:
        raise UserError("--group_by needs --data: the JSONL file whose records are grouped")
    # Sampling defaults to 16 prompts of the held-out split. A --data file is measured, not sampled,
    # unless asked: except by RL runs, whose only evaluation on a file of prompts is sampling.
    asked = args.num_samples is not None or bool(args.prompts)
    num_samples = _given(args.num_samples, 16)
    # Prompt completions default to the model's own distribution; scorer samples to the paper's
    # temperature 0.7, top-p 0.9. A flag given explicitly applies to both.
    policy = PolicyEvalSettings(num_samples, args.reward_model or "", args.scorer or "",
                                _given(args.max_new_tokens, 0), _given(args.temperature, -1.0), args.seed,
                                batch_size=args.batch_size)
    if args.data and not asked and load_config(args.model_dir).train.objective not in RL_OBJECTIVES:
        policy, num_samples = None, 0
    if not asked and load_config(args.model_dir).model.model == "keras_hub":
        # Sampled when asked (--num_samples, --prompts, --scorer): a preset's position table may not
        # hold the default 256 new tokens, and its likelihood is the evaluation a user asks for first.
        num_samples = 0
    max_new_tokens = _given(args.max_new_tokens, 256)
    sampling = SamplingSettings(num_samples, max_new_tokens, _given(args.temperature, 1.0),
                                args.top_k, _given(args.top_p, 1.0), args.seed, args.prompts, args.batch_size)
    misalignment = None
    if args.scorer:
        misalignment = MisalignmentSettings(args.scorer, args.scorer_samples, max_new_tokens,
                                            _given(args.temperature, 0.7), _given(args.top_p, 0.9), args.top_k,
                                            args.seed, args.reference_dir, threshold=args.threshold)
    report = evaluate_run(args.model_dir, args.split or "validation", args.batch_size, args.max_batches, sampling,
                          misalignment, policy, data=args.data, group_by=args.group_by)
    print(format_report(report))
    print(f"Written: {os.path.join(report_dir(args.model_dir, args.data), METRICS_FILE)}")
    return 0


def _given(value, default):
    return default if value is None else value


def main(argv=None):
    return run_cli(_evaluate, sys.argv[1:] if argv is None else argv)
