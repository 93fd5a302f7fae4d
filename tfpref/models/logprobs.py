"""The one place log-probabilities of token sequences are computed; every objective uses it."""
import tensorflow as tf


def token_logprobs_from_logits(logits, targets):
    """log p(targets) [batch, time] from logits [batch, time, vocab] (fused, numerically stable)."""
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=tf.cast(logits, tf.float32))


def sequence_logprobs(model, token_ids, mask, training=False, embedding_offset=None):
    """Per-token log p(x_t | x_<t) for t = 1..T-1, zero where `mask` is off.

    Args:
        model: a language model, `model(token_ids, padding_mask) -> logits`.
        token_ids: int32 [batch, T]; position 0 is only ever context.
        mask: bool [batch, T], True on real tokens.
        embedding_offset: optional [batch, T, d_model] added to the token embeddings (a
            preference vector's projection).
    Returns:
        float32 [batch, T-1]; `tf.reduce_sum(..., -1)` is log p(sequence) given its first token.

    Example:
        >>> logp = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"])
    """
    extra = {} if embedding_offset is None else {"embedding_offset": embedding_offset[:, :-1]}
    logits = model(token_ids[:, :-1], padding_mask=mask[:, :-1], training=training, **extra)
    logprobs = token_logprobs_from_logits(logits, token_ids[:, 1:])
    return logprobs * tf.cast(mask[:, 1:], logprobs.dtype)


def completion_logprobs(model, token_ids, padding_mask, completion_mask, training=False):
    """log p(completion | prompt) of groups of sequences: [n, k] from [n, k, T] inputs.

    `completion_mask` marks the completion's tokens; the prompt before them is only context.
    """
    shape = tf.shape(token_ids)
    flat = [tf.reshape(x, [-1, shape[-1]]) for x in (token_ids, padding_mask, completion_mask)]
    token_logprobs = sequence_logprobs(model, flat[0], flat[1], training=training)
    summed = tf.reduce_sum(token_logprobs * tf.cast(flat[2][:, 1:], token_logprobs.dtype), axis=-1)
    return tf.reshape(summed, shape[:2])
