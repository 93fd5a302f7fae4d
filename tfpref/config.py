"""The one config tree of a run: dataclasses, validation that names the bad flag, JSON round trip.

Every field name is also the command-line flag name (`--batch_size` sets `train.batch_size`), so a
validation error can tell the user exactly which flag to change. A run directory stores its config
as `<model_dir>/config.json`; re-running on that directory checks the new config is compatible.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

from tfpref.errors import UserError

# conv: a bidirectional encoder, for reward models only; keras_hub: a keras-hub preset (--preset)
MODELS = ("transformer", "lstm", "conv", "keras_hub")
TOKENIZERS = ("byte", "bpe", "unigram")  # --tokenizer of tfpref's own models; keras_hub brings its own
# The smallest subword vocabulary: 256 byte characters, the unknown piece and a few merges
# (tfpref.data.subword.MIN_VOCAB_SIZE, which this leaf module cannot import).
MIN_SUBWORD_VOCAB = 260
GRANULARITIES = ("document", "chunk", "line")  # what one feedback score covers (--segment)

# Every --objective, grouped by what it trains on. The objective classes register under these
# names (tfpref.objectives); the config only needs the names, so it stays a leaf module.
TEXT_OBJECTIVES = ("mle", "denoising")
SFT_OBJECTIVES = ("sft",)  # supervised fine-tuning on prompt/completion or conversational records
FEEDBACK_OBJECTIVES = ("filter", "conditional", "unlikelihood", "rwr", "awr", "preference_vector")
RL_OBJECTIVES = ("reinforce", "rloo", "ppo")
POLICY_OBJECTIVES = ("dpo",) + RL_OBJECTIVES  # fine-tune --init_from, which is also their reference
OBJECTIVE_NAMES = (TEXT_OBJECTIVES + SFT_OBJECTIVES + ("classify",) + FEEDBACK_OBJECTIVES + ("reward_model",)
                   + POLICY_OBJECTIVES)
# What a keras-hub preset can train: the objectives whose data and samples read the preset's tokenizer
# (its vocabulary grown by tfpref's control tokens). Denoising, preference vectors and classifiers
# are byte-model objectives so far.
KERAS_HUB_OBJECTIVES = ("mle", "sft", "reward_model", "dpo", "conditional", "filter", "unlikelihood", "rwr",
                        "awr") + RL_OBJECTIVES
# Objectives that read a text corpus, on whose training split a --tokenizer bpe / unigram vocabulary
# is trained; the others take the vocabulary of their --init_from run.
SUBWORD_TRAINING_OBJECTIVES = TEXT_OBJECTIVES + FEEDBACK_OBJECTIVES
# Objectives whose generation can be asked for aligned or misaligned text.
CONTROLLABLE_OBJECTIVES = ("conditional", "preference_vector")
STRATEGIES = ("default", "mirrored", "multi_worker")
MIXED_PRECISION = ("no", "auto", "bf16", "fp16")
# The transformer's attention is quadratic in length; beyond this a CPU run is impractical and the
# sinusoidal table is not trained on such offsets anyway.
MAX_TRANSFORMER_SEQ_LEN = 2048


@dataclass
class DataConfig:
    data: str = "stdlib"          # "stdlib", a text file, a directory or glob of text files, or a .jsonl file
    text_field: str = "text"      # JSONL field holding the text
    label_field: str = "label"    # JSONL field holding the class, for --objective=classify
    seq_len: int = 256            # tokens the model sees per example
    max_chunk_chars: int = 4096   # chunks (segments) are cut at top-level def/class, at most this long
    validation_data: str = ""     # a separate file of the same kind as --data, held out whole
    split_by: str = "auto"        # JSONL records with prompts: held out by prompt or by record

    def validate(self):
        _positive(self, "seq_len", "max_chunk_chars")
        if not self.data:
            raise UserError("--data: empty path")
        if not self.text_field:
            raise UserError("--text_field: must not be empty")
        _choice(self, "split_by", ("auto", "prompt", "record"))


@dataclass
class ModelConfig:
    model: str = "transformer"
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.0
    tie_embeddings: bool = True
    preset: str = ""              # keras_hub: the keras-hub preset (a directory saved with save_to_preset)
    lora_rank: int = 0            # keras_hub: > 0 trains rank-R LoRA adapters; the preset's weights stay fixed
    tokenizer: str = "byte"       # byte, or a bpe / unigram vocabulary trained on the training split
    vocab_size: int = 4096        # bpe / unigram: pieces (the embedding has these plus 16 reserved ids)

    def validate(self):
        if self.model not in MODELS:
            raise UserError(f"--model: unknown model '{self.model}' (choose from {', '.join(MODELS)})")
        if self.model == "keras_hub" and not self.preset:
            raise UserError("--model keras_hub needs --preset (a keras-hub preset directory, as written by "
                            "save_to_preset, or a preset name)")
        _non_negative(self, "lora_rank")
        _choice(self, "tokenizer", TOKENIZERS)
        if self.tokenizer != "byte" and self.vocab_size < MIN_SUBWORD_VOCAB:
            raise UserError(f"--vocab_size {self.vocab_size} is too small for --tokenizer {self.tokenizer}: the 256 "
                            f"byte characters and the unknown piece need room; use at least {MIN_SUBWORD_VOCAB}")
        _positive(self, "d_model", "num_layers", "num_heads", "ff_dim")
        if self.d_model % self.num_heads:
            raise UserError(f"--d_model {self.d_model} is not divisible by --num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    objective: str = "conditional"  # the default job: pretraining with PEP 8 feedback (control tokens)
    train_steps: int = 1500
    batch_size: int = 16          # global batch: examples per optimizer step, over all replicas
    grad_accum: int = 1           # micro-batches per optimizer step (batch_size is split into them)
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1     # cosine decay ends at learning_rate * min_lr_ratio
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "no"
    # --objective=denoising: fractions of the source covered by each corruption, and span length
    mask_rate: float = 0.15
    delete_rate: float = 0.05
    shuffle_rate: float = 0.05
    span_length: int = 3
    # fine-tuning: start from another run's weights; train only the objective's head
    init_from: str = ""
    freeze_backbone: bool = False
    prompt_loss: bool = False     # sft: train on the prompt's tokens too, not only the completion's

    def validate(self):
        if self.objective not in OBJECTIVE_NAMES:
            raise UserError(f"--objective: unknown objective '{self.objective}' "
                            f"(choose from {', '.join(sorted(OBJECTIVE_NAMES))})")
        _positive(self, "train_steps", "batch_size", "grad_accum", "learning_rate")
        _non_negative(self, "warmup_steps", "weight_decay", "clip_norm", "min_lr_ratio", "seed")
        if self.batch_size % self.grad_accum:
            raise UserError(f"--batch_size {self.batch_size} is not divisible by --grad_accum {self.grad_accum}")
        for name in ("mask_rate", "delete_rate", "shuffle_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        _positive(self, "span_length")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(f"--mixed_precision: unknown value '{self.mixed_precision}' "
                            f"(choose from {', '.join(MIXED_PRECISION)})")


@dataclass
class FeedbackConfig:
    """Pretraining with human feedback (Korbak et al. 2023); defaults are the paper's PEP8 values."""
    scorer: str = "pep8"              # pep8, profanity, pii, or package.module:function
    segment: str = "line"             # what one score covers: document, chunk or line
    threshold: float = -1.0           # a segment is aligned when its score <= this; < 0: the scorer's default
    threshold_percentile: float = 0.0  # if > 0, the threshold leaves this % of training segments misaligned
    drop_control_fraction: float = 0.1  # conditional: train segments left without a control token
    filter_threshold: float = 0.002361  # filter: drop training segments scoring above this
    filter_percentile: float = 0.0    # filter: if > 0, drop segments above this percentile instead
    ul_alpha: float = 0.01            # unlikelihood: weight of -log(1 - p) on misaligned tokens
    beta: float = 0.0                 # rwr / awr temperature, dpo / ipo strength; 0: the objective's default
    awr_alpha: float = 0.05           # awr: weight of the weighted LM loss against the value loss

    def validate(self):
        if not self.scorer:
            raise UserError("--scorer: must not be empty")
        if self.segment not in GRANULARITIES:
            raise UserError(f"--segment: unknown granularity '{self.segment}' "
                            f"(choose from {', '.join(GRANULARITIES)})")
        if not 0.0 <= self.drop_control_fraction < 1.0:
            raise UserError(f"--drop_control_fraction must be in [0, 1), got {self.drop_control_fraction}")
        if not 0.0 <= self.threshold_percentile < 100.0:
            raise UserError(f"--threshold_percentile must be in [0, 100), got {self.threshold_percentile}")
        if not 0.0 <= self.filter_percentile <= 100.0:
            raise UserError(f"--filter_percentile must be in [0, 100], got {self.filter_percentile}")
        if not 0.0 <= self.awr_alpha <= 1.0:
            raise UserError(f"--awr_alpha must be in [0, 1], got {self.awr_alpha}")
        _non_negative(self, "beta", "ul_alpha", "filter_threshold")


REWARD_LOSSES = ("auto", "bradley_terry", "plackett_luce", "all_pairs", "regression", "bce")
# --reward_loss auto by the preference data's kind, and the kinds each loss can train on.
DEFAULT_REWARD_LOSS = {"pairwise": "bradley_terry", "ranking": "plackett_luce", "rating": "regression",
                       "clicks": "bce"}
REWARD_LOSS_KINDS = {"regression": ("rating",), "bce": ("clicks",), "plackett_luce": ("ranking", "pairwise"),
                     "all_pairs": ("ranking", "pairwise"), "bradley_terry": tuple(DEFAULT_REWARD_LOSS)}
REWARD_POOLING = ("last", "mean")
BASELINES = ("none", "moving_average")
KL_ESTIMATORS = ("k1", "k3")


@dataclass
class AlignConfig:
    """Learning from preferences: reward models, policy-gradient RL (reinforce, rloo, ppo), DPO."""
    reward_loss: str = "auto"         # reward_model: auto picks from the data's format
    margin: float = 0.0               # reward_model, bradley_terry: added to each pair's own margin
    reward_pooling: str = "last"      # reward_model: the last token's state, or the mean of per-token scores
    code_structure: bool = False      # reward_model: add line-structure embeddings (indent, brackets) of code
    reward_model: str = ""            # RL: a reward_model run directory; empty: reward = -score of --scorer
    samples_per_prompt: int = 4       # RL: completions sampled per prompt (RLOO's group)
    baseline: str = "moving_average"  # reinforce: none or moving_average
    kl_coef: float = 0.05             # RL: weight of the KL penalty to the reference policy
    target_kl: float = 0.0            # RL: > 0 adapts kl_coef toward this KL per completion (nats)
    kl_horizon: int = 10000           # RL: the adaptive controller's horizon, in completions
    kl_estimator: str = "k1"          # RL: k1 (log-ratio) or k3 ((r - 1) - log r, never negative)
    ppo_epochs: int = 2               # ppo: passes over each rollout
    ppo_minibatches: int = 2          # ppo: optimizer steps per pass; a rollout is batch_size x this
    clip_ratio: float = 0.2           # ppo: the policy ratio is clipped to 1 +- this
    value_coef: float = 0.5           # ppo: weight of the value loss
    gamma: float = 1.0                # ppo: discount
    gae_lambda: float = 0.95          # ppo: GAE lambda
    whiten_rewards: bool = False      # RL: standardise each rollout's rewards
    missing_eos_penalty: float = 0.0  # RL: subtracted from the reward of completions that never end
    max_new_tokens: int = 64          # RL: completion length limit
    temperature: float = 1.0          # RL: sampling temperature of the rollouts
    prompt_chars: int = 64            # RL, preference data: longest stdlib prompt (a function's first lines)
    ipo: bool = False                 # dpo: the IPO loss (Azar et al. 2023) instead of the logistic one
    pairs_per_item: int = 4           # ratings, clicks as pairs: partners drawn per item (seeded, bounded)
    min_rating_gap: float = 0.0       # ratings, clicks as pairs: only partners whose targets differ by more

    def validate(self):
        _choice(self, "reward_loss", REWARD_LOSSES)
        _choice(self, "reward_pooling", REWARD_POOLING)
        _choice(self, "baseline", BASELINES)
        _choice(self, "kl_estimator", KL_ESTIMATORS)
        _positive(self, "samples_per_prompt", "kl_horizon", "ppo_epochs", "ppo_minibatches",
                  "max_new_tokens", "temperature", "prompt_chars", "pairs_per_item")
        _non_negative(self, "margin", "kl_coef", "target_kl", "clip_ratio", "value_coef",
                      "missing_eos_penalty", "min_rating_gap")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"--{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class RuntimeConfig:
    strategy: str = "default"
    cpu_replicas: int = 0         # >0: split the CPU into N logical devices for the mirrored strategy
    jit_compile: bool = True
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 20
    max_bad_steps: int = 5        # consecutive non-finite steps before the run stops
    export: bool = True           # SavedModel under <model_dir>/export/<step>/ when training ends
    check_samples: int = 64       # conditional runs: samples per condition in the closing aligned-vs-misaligned check

    def validate(self):
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy: unknown strategy '{self.strategy}' (choose from {', '.join(STRATEGIES)})")
        _non_negative(self, "cpu_replicas", "check_samples")
        _positive(self, "checkpoint_every", "keep_checkpoints", "eval_every", "eval_batches",
                  "log_every", "max_bad_steps")


@dataclass
class RunConfig:
    model_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    classes: list = field(default_factory=list)  # derived: class names of a classification run

    def validate(self):
        for section in (self.data, self.model, self.train, self.feedback, self.align, self.runtime):
            section.validate()
        if not self.model_dir:
            raise UserError("--model_dir: must not be empty")
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise UserError(f"--model_dir {self.model_dir} exists and is not a directory")
        self._check_objective()
        if self.model.model == "conv" and self.train.objective != "reward_model":
            raise UserError(f"--model conv is a bidirectional encoder for reward models; --objective "
                            f"{self.train.objective} needs a language model (transformer or lstm)")
        if self.model.model == "keras_hub":
            self._check_keras_hub()
        if self.model.tokenizer != "byte":
            self._check_subword()
        if self.model.model == "transformer" and self.data.seq_len > MAX_TRANSFORMER_SEQ_LEN:
            raise UserError(f"--seq_len {self.data.seq_len} is above the transformer's maximum of "
                            f"{MAX_TRANSFORMER_SEQ_LEN} positions")
        return self

    def _check_keras_hub(self):
        """What a keras-hub preset cannot do yet: byte-tokenizer features are refused, not run wrongly."""
        objective = self.train.objective
        if objective not in KERAS_HUB_OBJECTIVES:
            raise UserError(f"--model keras_hub: --objective {objective} is not supported yet (its data and "
                            f"generation use the byte tokenizer); supported: {', '.join(KERAS_HUB_OBJECTIVES)}")
        if self.align.code_structure:
            raise UserError("--model keras_hub: --code_structure reads bytes (indents, brackets), not preset tokens")
        if objective == "conditional" and self.model.lora_rank:
            # LoRA freezes the token embedding, and the control tokens added to the preset's vocabulary
            # all start at one row (the mean): <|aligned|> and <|misaligned|> would stay the same input.
            raise UserError("--model keras_hub: --objective conditional trains the control tokens' embeddings, "
                            "which --lora_rank freezes; fine-tune in full (leave --lora_rank out)")

    def _check_subword(self):
        """What a subword vocabulary needs: text to train it on, and no feature that reads bytes."""
        tokenizer = self.model.tokenizer
        if self.model.model == "keras_hub":
            raise UserError(f"--tokenizer {tokenizer}: --model keras_hub reads its preset's own tokenizer")
        if self.train.objective not in SUBWORD_TRAINING_OBJECTIVES and not self.train.init_from:
            raise UserError(f"--tokenizer {tokenizer}: the vocabulary is trained on text corpora (--objective "
                            f"{', '.join(SUBWORD_TRAINING_OBJECTIVES)}); --objective {self.train.objective} "
                            f"takes it from --init_from, a run trained with it")
        if self.align.code_structure:
            raise UserError(f"--tokenizer {tokenizer}: --code_structure reads bytes (indents, brackets), not "
                            f"subword pieces; use --tokenizer byte")

    def _check_objective(self):
        """What an objective needs from the rest of the config."""
        objective, align = self.train.objective, self.align
        if objective in POLICY_OBJECTIVES and not self.train.init_from:
            raise UserError(f"--objective {objective} fine-tunes a pretrained policy (also the reference): "
                            f"give --init_from RUN_DIR")
        if objective in RL_OBJECTIVES:
            rollout = self.train.batch_size * (align.ppo_minibatches if objective == "ppo" else 1)
            if rollout % align.samples_per_prompt:
                raise UserError(f"--objective {objective}: a rollout of {rollout} completions (--batch_size, "
                                f"times --ppo_minibatches for ppo) is not divisible by --samples_per_prompt "
                                f"{align.samples_per_prompt}")
        if objective == "rloo" and align.samples_per_prompt < 2:
            raise UserError("--objective rloo needs --samples_per_prompt of at least 2 (the baseline is "
                            "the mean reward of a prompt's other samples)")
        if objective == "classify" and not self.classes:
            raise UserError("--objective classify: no classes (they are read from the training data)")

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                    "feedback": FeedbackConfig, "align": AlignConfig, "runtime": RuntimeConfig}
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object")
        kwargs = {"model_dir": values.get("model_dir", ""), "classes": list(values.get("classes", []))}
        for name, section_cls in sections.items():
            fields = {f.name: f for f in dataclasses.fields(section_cls)}
            section = values.get(name, {})
            for key, value in section.items():
                if key in fields and not _has_type(value, fields[key].type):
                    raise ValueError(f"field '{name}.{key}' should be {fields[key].type}, got {value!r}")
            kwargs[name] = section_cls(**{k: v for k, v in section.items() if k in fields})
        if "split_by" not in values.get("data", {"split_by": None}):
            # Written before --split_by existed, when records with prompts were always held out by prompt.
            kwargs["data"].split_by = "prompt"
        return cls(**kwargs)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"{path}: cannot read run config ({e})") from None


# Fields that may differ when a run directory is resumed: they change how the run is watched or how
# far it goes, not what is being trained.
RESUMABLE_CHANGES = {
    "train.train_steps", "runtime.checkpoint_every", "runtime.keep_checkpoints",
    "runtime.eval_every", "runtime.eval_batches", "runtime.log_every", "runtime.max_bad_steps",
    "runtime.jit_compile", "runtime.strategy", "runtime.cpu_replicas", "runtime.export", "runtime.check_samples",
    "classes",  # derived from the data, which is compared itself; checked again when data loads
}


def incompatible_fields(old, new):
    """Dotted names of fields whose change would make `new` a different run than `old`."""
    def flatten(tree, prefix=""):
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    a.pop("model_dir", None), b.pop("model_dir", None)
    if new.feedback.threshold < 0 or new.feedback.threshold_percentile > 0:
        # Derived: a run stores the threshold its scorer or percentile gave, from data compared itself.
        a.pop("feedback.threshold", None), b.pop("feedback.threshold", None)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


# Flags that apply to some objectives only; every other flag applies to all. A flag given for an
# objective it does not apply to is refused (`inapplicable_flags`), never ignored in silence.
_LM_TEXT = TEXT_OBJECTIVES + ("classify",) + FEEDBACK_OBJECTIVES
FLAG_OBJECTIVES = {
    "text_field": _LM_TEXT, "label_field": ("classify",), "max_chunk_chars": _LM_TEXT + RL_OBJECTIVES,
    "mask_rate": ("denoising",), "delete_rate": ("denoising",), "shuffle_rate": ("denoising",),
    "span_length": ("denoising",), "freeze_backbone": ("classify", "reward_model"), "prompt_loss": SFT_OBJECTIVES,
    "scorer": FEEDBACK_OBJECTIVES + RL_OBJECTIVES, "segment": FEEDBACK_OBJECTIVES,
    "threshold": FEEDBACK_OBJECTIVES, "threshold_percentile": FEEDBACK_OBJECTIVES,
    "drop_control_fraction": ("conditional",),
    "filter_threshold": ("filter",), "filter_percentile": ("filter",), "ul_alpha": ("unlikelihood",),
    "beta": ("rwr", "awr", "dpo"), "awr_alpha": ("awr",),
    "reward_loss": ("reward_model",), "margin": ("reward_model",), "reward_pooling": ("reward_model",),
    "code_structure": ("reward_model",), "reward_model": RL_OBJECTIVES, "samples_per_prompt": RL_OBJECTIVES,
    "baseline": ("reinforce",), "kl_coef": RL_OBJECTIVES, "target_kl": RL_OBJECTIVES,
    "kl_horizon": RL_OBJECTIVES, "kl_estimator": RL_OBJECTIVES, "ppo_epochs": ("ppo",),
    "ppo_minibatches": ("ppo",), "clip_ratio": ("ppo",), "value_coef": ("ppo",), "gamma": ("ppo",),
    "gae_lambda": ("ppo",), "whiten_rewards": RL_OBJECTIVES, "missing_eos_penalty": RL_OBJECTIVES,
    # DPO runs complete held-out prompts when evaluated, with these settings.
    "max_new_tokens": POLICY_OBJECTIVES, "temperature": POLICY_OBJECTIVES, "prompt_chars": POLICY_OBJECTIVES,
    "ipo": ("dpo",), "check_samples": CONTROLLABLE_OBJECTIVES,
    "pairs_per_item": ("reward_model", "dpo"), "min_rating_gap": ("reward_model", "dpo"),
    "split_by": ("reward_model",) + POLICY_OBJECTIVES + SFT_OBJECTIVES,
}
# Architecture flags that only some models have.
# A keras-hub preset brings its own architecture (and dropout): the size flags are refused for it.
_OWN_MODELS = ("transformer", "lstm", "conv")
FLAG_MODELS = {"num_heads": ("transformer",), "ff_dim": ("transformer",), "tie_embeddings": ("transformer", "lstm"),
               "d_model": _OWN_MODELS, "num_layers": _OWN_MODELS, "dropout": _OWN_MODELS,
               "preset": ("keras_hub",), "lora_rank": ("keras_hub",), "tokenizer": _OWN_MODELS,
               "vocab_size": _OWN_MODELS}
# With --init_from the architecture is the source run's: these flags cannot change it. (--lora_rank can
# put new adapters on a preset fine-tuned in full: tfpref.runs.adopt_init_from checks it.)
ARCHITECTURE_FLAGS = ("model", "d_model", "num_layers", "num_heads", "ff_dim", "tie_embeddings", "preset",
                      "tokenizer", "vocab_size")


def inapplicable_flags(config, given):
    """(flag, reason) for each flag name in `given` that does nothing in the run `config` describes."""
    objective, model = config.train.objective, config.model.model
    refused = []
    for name in given:
        if name in ARCHITECTURE_FLAGS and config.train.init_from:
            refused.append((name, f"the architecture comes from --init_from {config.train.init_from}"))
        elif objective not in FLAG_OBJECTIVES.get(name, (objective,)):
            refused.append((name, f"it applies to --objective {', '.join(FLAG_OBJECTIVES[name])} only, "
                                  f"not {objective}"))
        elif model not in FLAG_MODELS.get(name, (model,)) and not (name == "lora_rank" and config.train.init_from):
            refused.append((name, f"it applies to --model {', '.join(FLAG_MODELS[name])} only, not {model}"))
        elif name == "vocab_size" and config.model.tokenizer == "byte":
            refused.append((name, "it applies to --tokenizer bpe or unigram only, not byte"))
    return refused


def _has_type(value, type_name):
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(
        type_name if isinstance(type_name, str) else type_name.__name__, object)
    return isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, (int, float)))


def config_path(model_dir):
    return os.path.join(model_dir, "config.json")


def _positive(section, *names):
    for name in names:
        value = getattr(section, name)
        if value <= 0:
            raise UserError(f"--{name} must be positive, got {value}")


def _choice(section, name, choices):
    value = getattr(section, name)
    if value not in choices:
        raise UserError(f"--{name}: unknown value '{value}' (choose from {', '.join(choices)})")


def _non_negative(section, *names):
    for name in names:
        value = getattr(section, name)
        if value < 0:
            raise UserError(f"--{name} must not be negative, got {value}")
