"""Command-line front end: flags -> validated RunConfig -> library. Used by train.py.

Flags default to "not given": on an existing run directory the stored config.json supplies every
flag you leave out, so `python train.py --model_dir=DIR` resumes DIR exactly as it was started.
"""
import argparse
import dataclasses
import os
import sys
import traceback

from tfpref.config import RunConfig, config_path
from tfpref.errors import UserError

# (section, flag, help). Types and defaults come from the dataclasses in tfpref.config.
TRAIN_FLAGS = [
    ("data", "data", "Corpus: 'stdlib' (the running Python's standard library), a text file, a directory "
                     "or glob of text files, or a .jsonl file."),
    ("data", "text_field", "JSONL field that holds the text."),
    ("data", "label_field", "JSONL field that holds the class label (--objective=classify)."),
    ("data", "seq_len", "Tokens (bytes) per training example."),
    ("data", "max_chunk_chars", "Longest chunk (segment) when cutting documents at top-level def/class."),
    ("model", "model", "Architecture: transformer or lstm (language models), or conv (a bidirectional "
                       "convolutional encoder for --objective reward_model)."),
    ("model", "d_model", "Width of embeddings and hidden states."),
    ("model", "num_layers", "Transformer blocks, stacked LSTM layers, or convolution layers."),
    ("model", "num_heads", "Attention heads."),
    ("model", "ff_dim", "Feed-forward width of a transformer block."),
    ("model", "dropout", "Dropout rate on attention weights, residual branches and embeddings."),
    ("model", "tie_embeddings", "Share the input embedding matrix with the output projection."),
    ("train", "objective", "Training objective: mle (next-token cross-entropy), denoising "
                           "(reconstruct the original after a corrupted copy), classify (a classifier head; "
                           "labels from --label_field, PEP 8 clean/not clean for stdlib), or one of the "
                           "pretraining-with-feedback objectives on --scorer's scores: filter, conditional "
                           "(<|aligned|>/<|misaligned|> control tokens), unlikelihood, rwr, awr, "
                           "preference_vector. Learning from preferences (--data: a preference JSONL file, "
                           "or for RL stdlib / a JSONL of prompts): reward_model, dpo, and the online RL "
                           "objectives reinforce, rloo and ppo (these fine-tune --init_from)."),
    ("train", "train_steps", "Optimizer steps in total (a resumed run continues up to this)."),
    ("train", "batch_size", "Global batch: examples per optimizer step over all replicas."),
    ("train", "grad_accum", "Micro-batches per step; batch_size is split into this many."),
    ("train", "learning_rate", "Peak learning rate of AdamW."),
    ("train", "warmup_steps", "Steps of linear warm-up before cosine decay."),
    ("train", "min_lr_ratio", "Final learning rate as a fraction of the peak."),
    ("train", "weight_decay", "AdamW weight decay (not applied to biases, norms, embeddings)."),
    ("train", "clip_norm", "Clip gradients to this global norm; 0 turns clipping off."),
    ("train", "seed", "Seed for initialisation, data order and dropout."),
    ("train", "mixed_precision", "no, bf16, fp16 (with loss scaling; for GPUs) or auto (fp16 on GPU, "
                                 "bf16 on CPU)."),
    ("train", "mask_rate", "denoising: fraction of the source in spans collapsed to one <|mask|>."),
    ("train", "delete_rate", "denoising: fraction of the source in spans deleted."),
    ("train", "shuffle_rate", "denoising: fraction of the source in spans shuffled in place."),
    ("train", "span_length", "denoising: tokens per corrupted span."),
    ("train", "init_from", "Start from the latest checkpoint of this run directory (its model "
                           "architecture is used; --dropout still applies)."),
    ("train", "freeze_backbone", "Train only the objective's head; the language model stays fixed."),
    ("feedback", "scorer", "Misalignment scorer for the feedback objectives, evaluate.py, and the RL reward "
                           "(minus the score) when no --reward_model is given: pep8 "
                           "(pycodestyle violations per character), profanity or pii (pip install -e "
                           "'.[scorers]'), or package.module:function (texts -> floats, lower is better)."),
    ("feedback", "segment", "What one score covers: document, chunk (a top-level def/class) or line."),
    ("feedback", "threshold", "conditional / unlikelihood: a segment is aligned when its score is at most this."),
    ("feedback", "drop_control_fraction", "conditional: fraction of training segments given no control token."),
    ("feedback", "filter_threshold", "filter: drop training segments scoring above this."),
    ("feedback", "filter_percentile", "filter: if > 0, drop training segments above this percentile of "
                                      "the training scores instead."),
    ("feedback", "ul_alpha", "unlikelihood: weight of -log(1 - p) on tokens of misaligned segments."),
    ("feedback", "beta", "rwr / awr: temperature of the weights exp(reward / beta), exp(advantage / beta) "
                         "(0 means 1); dpo: strength of the implicit KL to the reference (0 means 0.1)."),
    ("feedback", "awr_alpha", "awr: weight of the weighted LM loss; 1 - awr_alpha weighs the value loss."),
    ("align", "reward_loss", "reward_model: bradley_terry (pairs; every format can be turned into pairs), "
                             "plackett_luce or all_pairs (rankings), regression (ratings), bce (click-through "
                             "rates); auto picks by the data's format."),
    ("align", "margin", "reward_model, bradley_terry: margin added to each pair's own 'margin' field."),
    ("align", "reward_pooling", "reward_model: last (a projection of the last token's state) or mean (the mean "
                                "of a per-token score over the completion: suits rewards that are densities of "
                                "local features, such as PEP 8 violations per byte)."),
    ("align", "code_structure", "reward_model: add learned embeddings of each byte's line structure (the "
                                "line's indent, its change from the previous line, bracket depth, where "
                                "Python's tokenizer would give up) to the "
                                "backbone's input: for preferences about source code."),
    ("align", "reward_model", "reinforce / rloo / ppo: a reward_model run directory whose normalised reward "
                              "is maximised; empty: the reward is minus --scorer's score."),
    ("align", "samples_per_prompt", "RL: completions sampled per prompt (RLOO's leave-one-out group)."),
    ("align", "baseline", "reinforce: none or moving_average (rloo uses the group's other samples, ppo a "
                          "value head)."),
    ("align", "kl_coef", "RL: weight of the KL penalty to the reference policy (--init_from), subtracted "
                         "from the reward; the starting value when --target_kl is set."),
    ("align", "target_kl", "RL: if > 0, adapt kl_coef toward this KL per completion (nats), as in Ziegler "
                           "et al. 2019."),
    ("align", "kl_horizon", "RL: horizon of the adaptive KL controller, in completions."),
    ("align", "kl_estimator", "RL: k1 (log p - log p_ref) or k3 ((r - 1) - log r, r = p_ref / p; unbiased "
                              "and never negative)."),
    ("align", "ppo_epochs", "ppo: passes over each rollout."),
    ("align", "ppo_minibatches", "ppo: optimizer steps per pass; a rollout holds batch_size x this "
                                 "completions."),
    ("align", "clip_ratio", "ppo: clip the probability ratio to [1 - x, 1 + x]."),
    ("align", "value_coef", "ppo: weight of the value head's loss."),
    ("align", "gamma", "ppo: discount factor."),
    ("align", "gae_lambda", "ppo: lambda of generalised advantage estimation."),
    ("align", "whiten_rewards", "RL: standardise each rollout's rewards to mean 0, std 1."),
    ("align", "missing_eos_penalty", "RL: subtracted from the reward of a completion that hits "
                                     "--max_new_tokens without ending."),
    ("align", "max_new_tokens", "RL: longest completion, in tokens."),
    ("align", "temperature", "RL: sampling temperature of the rollouts."),
    ("align", "prompt_chars", "RL and preference data on stdlib: a prompt is the first lines of a function, "
                              "up to this many characters."),
    ("align", "ipo", "dpo: use the IPO loss (squared, Azar et al. 2023) instead of DPO's logistic loss."),
    ("runtime", "strategy", "default (one device), mirrored (all local GPUs, or --cpu_replicas CPU "
                            "devices) or multi_worker (reads TF_CONFIG)."),
    ("runtime", "cpu_replicas", "With mirrored/multi_worker: split the CPU into N logical devices."),
    ("runtime", "jit_compile", "Compile with XLA: the per-replica training step, RL rollouts and the closing "
                               "sampling check."),
    ("runtime", "checkpoint_every", "Save a checkpoint every N steps (and at the end, and on "
                                    "SIGINT/SIGTERM)."),
    ("runtime", "keep_checkpoints", "Checkpoints to keep."),
    ("runtime", "eval_every", "Evaluate on the validation split every N steps."),
    ("runtime", "eval_batches", "Validation batches per evaluation."),
    ("runtime", "log_every", "Write TensorBoard training scalars every N steps."),
    ("runtime", "max_bad_steps", "Stop after this many consecutive non-finite steps."),
    ("runtime", "check_samples", "Conditional and preference-vector runs end by sampling this many texts asked "
                                 "to be aligned and as many asked to be misaligned, and print their "
                                 "misalignment; 0 skips the check."),
    ("runtime", "export", "When training ends, write a SavedModel for TensorFlow Serving to "
                          "<model_dir>/export/<step>/ (signatures generate and score; classify and "
                          "score for classifiers; reward and score for reward models)."),
]


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def _section_fields(section):
    return {f.name: f for f in dataclasses.fields(type(getattr(RunConfig(), section)))}


def build_train_parser():
    parser = _OneLineErrorParser(
        prog="train.py",
        description="Train a tfpref language model. With no flags: conditional training (pretraining with "
                    "PEP 8 feedback: <|aligned|>/<|misaligned|> control tokens before each line) of a small "
                    "transformer on the Python standard library, in logs/transformer-conditional.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = RunConfig()
    parser.add_argument("--model_dir", default=argparse.SUPPRESS,
                        help="Run directory (config, checkpoints, TensorBoard logs). Re-using it "
                             "resumes the run. (default: logs/<model>-<objective>)")
    for section, name, help_text in TRAIN_FLAGS:
        field = _section_fields(section)[name]
        default = getattr(getattr(defaults, section), name)
        kwargs = dict(default=argparse.SUPPRESS, help=f"{help_text} (default: {default})")
        if field.type in (bool, "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}.get(field.type, field.type)
        parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's own log output.")
    parser.add_argument("--debug", action="store_true", help="Show a traceback on errors.")
    parser.add_argument("--no_progress", action="store_true", help="No progress bar (for logs).")
    return parser


def config_from_args(args):
    """RunConfig from parsed flags, on top of the run dir's stored config when it exists."""
    given = {k: v for k, v in vars(args).items() if k not in ("verbose", "debug", "no_progress")}
    default_dir = os.path.join("logs", f"{given.get('model', 'transformer')}-"
                                       f"{given.get('objective', RunConfig().train.objective)}")
    model_dir = given.pop("model_dir", default_dir)
    stored = config_path(model_dir)
    config = RunConfig.load(stored) if os.path.exists(stored) else RunConfig()
    config.model_dir = model_dir
    for section, name, _ in TRAIN_FLAGS:
        if name in given:
            setattr(getattr(config, section), name, given[name])
    return config


def run_cli(main, argv):
    """Run `main(argv)`; user errors become one line on stderr and exit code 2."""
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


def _train(argv):
    args = build_train_parser().parse_args(argv)
    config = config_from_args(args)
    from tfpref.training.run import train
    from tfpref.training.trainer import TrainingDiverged

    try:
        result = train(config, show_progress=not args.no_progress)
    except TrainingDiverged as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    print()
    if "interrupted_by" in result:
        print(f"Stopped by {result['interrupted_by']} at step {result['step']}; checkpoint saved. "
              f"Run the same command to resume.")
        return 0
    summary = [f"step {result['step']}"]
    for key, value in result.items():
        if key == "loss" or key.startswith("validation_"):
            summary.append(f"{key} {value:.4f}")
    print("Done: " + ", ".join(summary))
    print(f"Run directory: {config.model_dir}")
    if "export" in result:
        print(f"SavedModel: {result['export']}")
    if "controllability" in result:
        check = result["controllability"]
        print(f"Samples asked to be aligned:    misalignment {check['aligned_misalignment']:.4f}, "
              f"{check['aligned_violation_rate']:.0%} with a violation")
        print(f"Samples asked to be misaligned: misalignment {check['misaligned_misalignment']:.4f}, "
              f"{check['misaligned_violation_rate']:.0%} with a violation")
    print(f"Watch it:      tensorboard --logdir {os.path.dirname(os.path.abspath(config.model_dir))}")
    return 0


def build_evaluate_parser():
    parser = _OneLineErrorParser(
        prog="evaluate.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate a run directory's latest checkpoint on a held-out split. The model, data "
                    "and objective come from the run's config.json. Writes <model_dir>/eval/metrics.json "
                    "and TensorBoard scalars under <model_dir>/eval.")
    parser.add_argument("--model_dir", required=True, help="Run directory to evaluate.")
    parser.add_argument("--split", default="validation", choices=["validation", "test"],
                        help="Held-out split.")
    parser.add_argument("--batch_size", type=int, default=32, help="Examples per evaluation batch.")
    parser.add_argument("--max_batches", type=int, default=None, help="Stop after this many batches.")
    parser.add_argument("--export", action="store_true",
                        help="Instead of evaluating, write the latest checkpoint as a SavedModel to "
                             "<model_dir>/export/<step>/ (TensorFlow Serving layout).")
    sampling = parser.add_argument_group(
        "sampling", "Language-model runs also complete prompts: samples go to <model_dir>/eval/samples.jsonl, "
                    "diversity (distinct-1/2, Self-BLEU) and, with references, BLEU and ROUGE-L to the metrics.")
    sampling.add_argument("--num_samples", type=int, default=16,
                          help="Prompts to complete (the first N of --prompts or of the split); 0 skips sampling.")
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
                        "score_max@25, the fraction of samples with any violation, the parse rate (pep8), KL from "
                        "--reference_dir's model, and held-out LM loss on aligned and on all text. Samples go to "
                        "<model_dir>/eval/unconditional_samples.jsonl.")
    feedback.add_argument("--scorer", default=None,
                          help="pep8, profanity, pii or package.module:function. Default: no misalignment evaluation.")
    feedback.add_argument("--scorer_samples", type=int, default=1024, help="Unconditional samples to score.")
    feedback.add_argument("--reference_dir", default=None,
                          help="Run directory of the reference model for the KL estimate (e.g. an MLE run).")
    policy = parser.add_argument_group(
        "policy", "Runs that fine-tune a policy (dpo, reinforce, rloo, ppo) are compared with their reference "
                  "(--init_from) on --num_samples held-out prompts: mean reward under the reward model and/or "
                  "--scorer, win-rate against the reference, KL to the reference, and held-out NLL drift. "
                  "Completions go to <model_dir>/eval/policy_samples.jsonl.")
    policy.add_argument("--reward_model", default=None,
                        help="reward_model run directory to judge with. Default: the run's own --reward_model.")
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's own log output.")
    parser.add_argument("--debug", action="store_true", help="Show a traceback on errors.")
    return parser


def _evaluate(argv):
    args = build_evaluate_parser().parse_args(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {args.batch_size}")
    if args.export:
        from tfpref.training.export import export_run

        print(f"SavedModel: {export_run(args.model_dir)}")
        return 0
    from tfpref.evaluation.generation import SamplingSettings
    from tfpref.evaluation.misalignment import MisalignmentSettings
    from tfpref.evaluation.run import evaluate_run, format_report

    # Prompt completions default to the model's own distribution; scorer samples to the paper's
    # temperature 0.7, top-p 0.9. A flag given explicitly applies to both.
    from tfpref.evaluation.policy import PolicyEvalSettings

    policy = PolicyEvalSettings(args.num_samples, args.reward_model or "", args.scorer or "",
                                _given(args.max_new_tokens, 0), _given(args.temperature, -1.0), args.seed,
                                batch_size=args.batch_size)
    max_new_tokens = _given(args.max_new_tokens, 256)
    sampling = SamplingSettings(args.num_samples, max_new_tokens, _given(args.temperature, 1.0),
                                args.top_k, _given(args.top_p, 1.0), args.seed, args.prompts, args.batch_size)
    misalignment = None
    if args.scorer:
        misalignment = MisalignmentSettings(args.scorer, args.scorer_samples, max_new_tokens,
                                            _given(args.temperature, 0.7), _given(args.top_p, 0.9), args.top_k,
                                            args.seed, args.reference_dir)
    report = evaluate_run(args.model_dir, args.split, args.batch_size, args.max_batches, sampling, misalignment,
                          policy)
    print(format_report(report))
    print(f"Written: {os.path.join(args.model_dir, 'eval', 'metrics.json')}")
    return 0


def _given(value, default):
    return default if value is None else value


def evaluate_main(argv=None):
    return run_cli(_evaluate, sys.argv[1:] if argv is None else argv)


def train_main(argv=None):
    return run_cli(_train, sys.argv[1:] if argv is None else argv)
