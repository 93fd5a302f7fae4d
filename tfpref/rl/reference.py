"""The frozen reference policy of fine-tuning runs: the --init_from run's language model, never trained.

Two forms, by what the run trains:
  * the policy itself with its LoRA adapters switched off (`AdaptersOff`), when the run trains new
    adapters on the --init_from weights (a keras-hub preset with --lora_rank, starting from a run
    without adapters): those weights never change, so the base model is exactly the --init_from
    policy, and it costs no second copy of the model;
  * otherwise a copy (`reference_model`): a new model with --init_from's backbone weights, as large
    as the policy. A run trained in full changes every weight, and a run continuing the --init_from
    run's own adapters would lose them with the adapters off.

Example:
    >>> reference = policy_reference(config, policy)   # AdaptersOff(policy) or a copy
    >>> logprobs = tf.function(lambda ids, mask: sequence_logprobs(reference, ids, mask))(ids, mask)
"""
import contextlib

from tfpref.models import CausalLM, build_model
from tfpref.models.lora import adapted_layers
from tfpref.runs import load_config, restore_weights


def reference_model(config):
    """A new language model with the architecture of `config` and the backbone weights of
    --init_from's latest checkpoint (whatever heads that run had are not needed)."""
    backbone = build_model(config.model, seed=config.train.seed)
    restore_weights([backbone], config.train.init_from)
    model = CausalLM(backbone, name="reference")
    model.trainable = False
    return model


def adapters_are_new(config):
    """Whether the run's LoRA adapters start on --init_from weights that had none: then the policy with
    its adapters off is the --init_from policy, whatever the adapters learn."""
    if not (config.model.lora_rank and config.train.init_from):
        return False
    return not load_config(config.train.init_from, "--init_from").model.lora_rank


def policy_reference(config, policy):
    """The reference of the policy `policy` (a `CausalLM`) of the run `config`: the policy with its
    adapters off when they are new (`adapters_are_new`), else a copy (`reference_model`)."""
    return AdaptersOff(policy) if adapters_are_new(config) else reference_model(config)


class AdaptersOff:
    """A view of a LoRA-adapted `CausalLM` as its base model: the same variables, adapters switched off.

    keras's Dense, EinsumDense and Embedding add their adapters when `layer.lora_enabled` is true, a
    Python attribute read when the layer is called, that is while a `tf.function` is traced. Every
    method here turns it off on the adapted layers for the duration of its call (and back on after,
    whatever happens), so anything traced or run through this view computes the base model, and
    anything traced through the policy the adapted one, even when both are traced into one function
    (as `RolloutMaker`'s forward passes are). A traced function keeps what it was traced with.

    It has what the sampler, `sequence_logprobs` and the rollouts ask of a language model; it holds
    no weights of its own and is never trained.
    """

    value_head = None  # the reference estimates no values (a policy's value head is the policy's)

    def __init__(self, policy):
        self.policy = policy
        self.adapted = adapted_layers(policy)
        if not self.adapted:
            raise ValueError(f"{policy.name} has no LoRA adapters to switch off")
        self.vocab_size, self.d_model = policy.vocab_size, policy.d_model

    @contextlib.contextmanager
    def _base(self):
        for layer in self.adapted:
            layer.lora_enabled = False
        try:
            yield
        finally:
            for layer in self.adapted:
                layer.lora_enabled = True

    @property
    def eos_id(self):
        return self.policy.eos_id

    def banned_ids(self, aligned=True):
        return self.policy.banned_ids(aligned)

    def prompt_prefix(self, aligned=True):
        return self.policy.prompt_prefix(aligned)

    def condition(self, batch_size, aligned=True):
        with self._base():
            return self.policy.condition(batch_size, aligned)

    def hidden_states(self, *args, **kwargs):
        with self._base():
            return self.policy.hidden_states(*args, **kwargs)

    def logits_from_hidden(self, hidden):
        with self._base():
            return self.policy.logits_from_hidden(hidden)

    def init_cache(self, batch_size, length):
        return self.policy.init_cache(batch_size, length)

    def hidden_states_cached(self, *args, **kwargs):
        with self._base():
            return self.policy.hidden_states_cached(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        with self._base():
            return self.policy(*args, **kwargs)
