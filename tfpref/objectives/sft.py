"""Supervised fine-tuning: maximum likelihood of the completions (assistant turns) given their prompts.

loss_i = sum over trained targets t of -log p(x_t | x_<t), divided by T - 1 as MLE does
(tfpref.objectives.mle.per_example), where the trained targets are the completion's tokens
(`completion_mask`: its bytes and EOS, or an assistant turn's content and `<|end|>`), or with
--prompt_loss every real token. The `nll` metric (and perplexity from it) is always over the
completion's tokens, so runs with and without --prompt_loss compare. Data: tfpref.data.sft; start
from a pretrained language model with --init_from.
"""
import tensorflow as tf

from tfpref.data.loading import refuse_frozen_chat_markers
from tfpref.data.sft import load_sft_data
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError
from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import ObjectiveOutput
from tfpref.objectives.mle import MleObjective, per_example


class SftObjective(MleObjective):
    """Completion-only (by default) next-token cross-entropy on prompt/completion or chat records."""

    name = "sft"

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """{split: SftData or None} of --data's `wanted` splits (by prompt, as preference records)."""
        data = config.data
        tokenizer = tokenizer_for(config)
        loaded = {split: load_sft_data(data.data, data.seq_len, split, data.split_by, data.validation_data, tokenizer)
                  for split in wanted}
        if "train" in wanted and loaded["train"] is None:
            raise UserError(f"--data {data.data}: no training records (all are held out, split by {data.split_by}); "
                            f"give the records a 'split' field, --split_by record, or --validation_data FILE")
        refuse_frozen_chat_markers(config, any(r.conversational for part in loaded.values() if part
                                               for r in part.records))
        return loaded

    def compute(self, batch, model, training):
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training)
        completion = tf.cast(batch["completion_mask"][:, 1:], tf.float32)
        trained = tf.cast(batch["padding_mask"][:, 1:], tf.float32) if self.config.train.prompt_loss else completion
        metrics = {"nll": (-tf.reduce_sum(logprobs * completion), tf.reduce_sum(completion))}
        return ObjectiveOutput(losses=per_example(-logprobs * trained, batch), metrics=metrics)
