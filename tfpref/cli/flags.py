"""The flags of `tfpref train` (train.py): one per config field, with its help and its --help group.

Types and defaults come from the dataclasses in tfpref.config; which objective or model a flag
applies to comes from `tfpref.config.FLAG_OBJECTIVES` / `FLAG_MODELS`, and is shown in its help.
"""
# --help groups, one per config section, in the order they are shown.
GROUPS = {"data": "data", "model": "model", "train": "training", "feedback": "feedback objectives",
          "align": "preference learning and RL", "runtime": "runtime"}

# (section, flag, help). Types and defaults come from the dataclasses in tfpref.config.
TRAIN_FLAGS = [
    ("data", "data", "Corpus: 'stdlib' (the running Python's standard library), a text file, a directory "
                     "or glob of text files, or a .jsonl file."),
    ("data", "text_field", "JSONL field that holds the text."),
    ("data", "label_field", "JSONL field that holds the class label (--objective=classify)."),
    ("data", "seq_len", "Tokens per training example (bytes with --tokenizer byte)."),
    ("data", "max_chunk_chars", "Longest chunk (segment) when cutting documents at top-level def/class."),
    ("data", "validation_data", "A separate file of the same kind as --data to validate (and evaluate) on, "
                                "instead of a held-out part of --data (all of which then trains)."),
    ("data", "split_by", "JSONL records with prompts (preferences, prompts, SFT): hold out whole prompts, or "
                         "records; auto splits by record when one prompt holds more than 5%% of the records "
                         "(an empty prompt shared by all). A record's own 'split' field always wins."),
    ("model", "model", "Architecture: transformer or lstm (language models), conv (a bidirectional "
                       "convolutional encoder for --objective reward_model), or keras_hub (a pretrained "
                       "keras-hub preset, --preset, with its own tokenizer)."),
    ("model", "preset", "keras_hub: the keras-hub preset to start from: a directory written by "
                        "save_to_preset (or a preset name keras-hub can download)."),
    ("model", "lora_rank", "keras_hub: if > 0, freeze the preset's weights and train rank-R LoRA adapters on "
                           "the attention's query and value projections."),
    ("model", "tokenizer", "byte (UTF-8 bytes, 256 ids), or a lossless subword vocabulary, bpe or unigram "
                           "(SentencePiece over the text's bytes), trained on the training split and saved in "
                           "<model_dir>/tokenizer/; --init_from runs take their source's."),
    ("model", "vocab_size", "bpe / unigram: pieces in the vocabulary (at least 260); the model's embedding "
                            "has these plus the 16 reserved ids (padding, BOS, EOS, control tokens)."),
    ("model", "d_model", "Width of embeddings and hidden states."),
    ("model", "num_layers", "Transformer blocks, stacked LSTM layers, or convolution layers."),
    ("model", "num_heads", "Attention heads."),
    ("model", "ff_dim", "Feed-forward width of a transformer block."),
    ("model", "dropout", "Dropout rate on attention weights, residual branches and embeddings."),
    ("model", "tie_embeddings", "Share the input embedding matrix with the output projection."),
    ("train", "objective", "Training objective: mle (next-token cross-entropy), denoising "
                           "(reconstruct the original after a corrupted copy), sft (supervised fine-tuning on "
                           "prompt/completion or chat JSONL records), classify (a classifier head; "
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
    ("train", "prompt_loss", "sft: train on the prompt's (or the user's turns') tokens too; by default only "
                             "the completion's (the assistant's) tokens are trained on."),
    ("feedback", "scorer", "Misalignment scorer for the feedback objectives, evaluate.py, and the RL reward "
                           "(minus the score) when no --reward_model is given: pep8 "
                           "(pycodestyle violations per character), profanity or pii (pip install -e "
                           "'.[scorers]'), or package.module:function (texts -> floats, lower is better)."),
    ("feedback", "segment", "What one score covers: document, chunk (a top-level def/class) or line."),
    ("feedback", "threshold", "A segment is aligned when its score is at most this (conditional and unlikelihood "
                              "train on it; the rest report LM loss on aligned text; evaluate.py counts samples "
                              "above it as violations). Negative: the scorer's default (pep8, pii: 0; profanity: "
                              "0.5; a user function's `default_threshold` attribute, else 0)."),
    ("feedback", "threshold_percentile", "If > 0, the threshold is the score above which this percentage of the "
                                         "training segments lie (it replaces --threshold). Conditional and "
                                         "unlikelihood runs refuse a threshold that leaves under 1%% or over 99%% of "
                                         "the training segments aligned."),
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
    ("align", "pairs_per_item", "Ratings or clicks turned into pairs (--reward_loss bradley_terry, dpo): "
                                "partners drawn for each item among the other items of its prompt, seeded; "
                                "never the all-pairs product."),
    ("align", "min_rating_gap", "Ratings or clicks turned into pairs: only partners whose ratings (or "
                                "click-through rates) differ by more than this."),
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
