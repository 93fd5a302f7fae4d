"""Compiled text generation: greedy, temperature, top-k and top-p sampling from a tfpref model.

One `tf.function` runs the whole generation (prompt pass and a `tf.while_loop` of decoding steps)
so a batch costs one call into TensorFlow. The prompt goes through the model once, filling a
key/value cache (and, for the LSTM, its recurrent state); each new token then costs one position
of work. `use_cache=False` recomputes the whole sequence at every step instead: the reference the
cached path is tested against, and the baseline of `benchmarks/generate_throughput.py`.

Prompts of different lengths are left-padded into one batch: every row's next token is then at
the same column, and each row's positions start at its first real token, so a row's output does
not depend on how much padding it got.

keras-hub's samplers are not used: they return tokens only, and reinforcement learning needs the
log-probability of every sampled token under the sampling distribution, plus a per-row finished
mask. The filtering rules follow Hugging Face's (top-k first, then top-p on what is left).

Example:
    >>> sampler = Sampler(model, max_new_tokens=64)
    >>> ids, mask = left_pad([tokenizer.encode("def ", add_bos=True)])
    >>> out = sampler(ids, mask, temperature=0.8, top_p=0.95, seed=1)
    >>> tokenizer.decode(out["tokens"][0][out["mask"][0]])
"""
import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python.xla import dynamic_update_slice

from tfpref.data.tokenizer import ByteTokenizer, left_pad  # noqa: F401 (left_pad re-exported)

# The byte vocabulary's bans: padding, a second BOS, control tokens (they are inputs: conditional
# training puts them in prompts; the model should not choose them itself). A sampler takes its
# model's own bans (`model_banned_ids`), which for a byte-level model are these.
DEFAULT_BANNED_IDS = ByteTokenizer.generation_banned_ids
# What fills a row's columns after it finished (masked out): id 0 exists in every vocabulary.
FILLER_ID = 0
# `eos_id` left unsaid: the model's own end token (None is a choice: never stop early).
MODEL_EOS = "model"


def model_banned_ids(model):
    """The ids `model` never emits when asked for aligned text: a task model's (its conditioning
    decides), else the backbone's vocabulary's."""
    if hasattr(model, "banned_ids"):
        return tuple(model.banned_ids(True))
    return tuple(model.generation_banned_ids)


def filter_logits(logits, top_k, top_p):
    """`logits` [batch, vocab] with everything outside the top-k, then outside the top-p, at -inf.

    top_k <= 0 keeps all tokens; top_p >= 1 keeps all tokens. Tokens tied with the last kept
    logit are kept too.
    """
    vocab = tf.shape(logits)[-1]
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    in_top_k = tf.range(vocab)[None, :] < k
    sorted_probs = tf.nn.softmax(tf.where(in_top_k, sorted_logits, -np.inf), axis=-1)
    # A token stays if the tokens ranked above it hold less than top_p of the mass, so the most
    # likely token always stays.
    in_top_p = tf.math.cumsum(sorted_probs, axis=-1, exclusive=True) < top_p
    kept = tf.reduce_sum(tf.cast(tf.logical_and(in_top_k, in_top_p), tf.int32), axis=-1)
    threshold = tf.gather(sorted_logits, tf.maximum(kept, 1) - 1, axis=1, batch_dims=1)
    return tf.where(logits < threshold[:, None], -np.inf, logits)


class Sampler:
    """Generates up to `max_new_tokens` tokens after each prompt; stops a row at `eos_id`.

    Args:
        model: a tfpref language model (`init_cache`, `hidden_states_cached`, `logits_from_hidden`).
        max_new_tokens: length of the generated part.
        banned_ids: ids never sampled (default: the model's, `model_banned_ids`: for the byte
            vocabulary PAD, BOS and the control ids; for a keras-hub preset its start and pad tokens
            unless they are its end token).
        eos_id: the id that ends a row (default: the model's `eos_id`, the end token of its
            vocabulary); None generates exactly `max_new_tokens` everywhere.
        use_cache: False recomputes the full sequence every step (a reference, much slower).
        jit_compile: compile the generation with XLA.

    Calling it with `prompt_ids`, `prompt_mask` (int32 / bool [batch, prompt_len], left-padded,
    every row with at least one real token) and `temperature` (0 = greedy), `top_k` (0 = off),
    `top_p` (1 = off), `seed` returns a dict of NumPy arrays:
        tokens [batch, max_new_tokens] int32: generated ids, FILLER_ID after a row finished.
        mask [batch, max_new_tokens] bool: True on generated tokens (the EOS included).
        logprobs [batch, max_new_tokens] float32: log-probability of each token under the
            distribution it was drawn from (temperature, top-k/top-p and bans applied); for greedy
            decoding, the temperature-1 distribution it took the argmax of. 0 where mask is off.
        model_logprobs: the same under the model's own distribution (no temperature, filtering
            or bans): what a policy-gradient loss differentiates.
        finished [batch] bool: the row emitted EOS. lengths [batch] int32: tokens in mask.
    The same seed and inputs give the same output.
    """

    def __init__(self, model, max_new_tokens, banned_ids=None, eos_id=MODEL_EOS, use_cache=True, jit_compile=True):
        self.model, self.max_new_tokens = model, int(max_new_tokens)
        banned_ids = model_banned_ids(model) if banned_ids is None else banned_ids
        eos_id = model.eos_id if eos_id == MODEL_EOS else eos_id
        self.eos_id, self.use_cache = eos_id, use_cache
        banned = np.zeros([model.vocab_size], bool)
        banned[list(banned_ids)] = True
        self.banned = tf.constant(banned)
        self.generate = tf.function(self.generate_graph, jit_compile=jit_compile)

    def __call__(self, prompt_ids, prompt_mask, temperature=1.0, top_k=0, top_p=1.0, seed=0,
                 embedding_offset=None, banned=None):
        """See the class docstring; `embedding_offset` [batch, d_model] (a preference vector's
        projection) is added to the embedding of every prompt and generated token; `banned` (bool
        [batch, vocab]) replaces the sampler's `banned_ids` for this call, row by row."""
        if embedding_offset is not None:
            embedding_offset = tf.convert_to_tensor(embedding_offset)
        if banned is not None:
            banned = tf.convert_to_tensor(banned, tf.bool)
        outputs = self.generate(tf.convert_to_tensor(prompt_ids, tf.int32),
                                tf.convert_to_tensor(prompt_mask, tf.bool),
                                tf.constant(temperature, tf.float32), tf.constant(top_k, tf.int32),
                                tf.constant(top_p, tf.float32), tf.constant(seed, tf.int32),
                                embedding_offset=embedding_offset, banned=banned)
        return {name: value.numpy() for name, value in outputs.items()}

    def generate_graph(self, prompt_ids, prompt_mask, temperature, top_k, top_p, seed, max_new_tokens=None,
                       embedding_offset=None, stop_after=None, banned=None):
        """The graph behind `__call__` (tensors in, tensors out). Export traces it directly, with
        `max_new_tokens` a tensor so one graph serves every length: the width of the outputs (a
        compile-time constant under XLA, so the export rounds it up to a bucket) while `stop_after`
        (default: the same), a run-time value, is how many tokens are generated; columns past it
        stay as finished rows leave theirs (FILLER_ID, masked). `banned` (bool [batch, vocab], default
        the sampler's own bans in every row) is what each row may not sample: rows asked for opposite
        control tokens ban opposite ids in one call."""
        offset = None if embedding_offset is None else embedding_offset[:, None, :]
        batch, prompt_len = tf.shape(prompt_ids)[0], tf.shape(prompt_ids)[1]
        new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        limit = new if stop_after is None else stop_after
        # Generated positions are real keys; causality alone hides the ones not generated yet.
        key_mask = tf.concat([prompt_mask, tf.ones([batch, new], tf.bool)], axis=1)
        prompt_counts = tf.cast(prompt_mask, tf.int32)
        real_lengths = tf.reduce_sum(prompt_counts, axis=1)
        prompt_positions = tf.maximum(tf.cumsum(prompt_counts, axis=1) - 1, 0)
        new_positions = real_lengths[:, None] + tf.range(new)[None, :]

        if self.use_cache:
            cache = self.model.init_cache(batch, prompt_len + new)
            hidden, cache = self.model.hidden_states_cached(prompt_ids, cache, 0, key_mask,
                                                            prompt_positions, offset)
        else:
            cache = tf.concat([prompt_ids, tf.fill([batch, new], FILLER_ID)], axis=1)
            hidden = self._uncached_hidden(cache, key_mask, prompt_positions, new_positions,
                                           prompt_len - 1, offset)
        logits = self.model.logits_from_hidden(hidden[:, -1])

        def step(i, logits, cache, finished, tokens, logprobs, model_logprobs, mask):
            token, logprob, model_logprob = self._choose(logits, temperature, top_k, top_p,
                                                         tf.stack([seed, i]), banned)
            alive = tf.logical_not(finished)
            token = tf.where(alive, token, FILLER_ID)
            tokens = _write_column(tokens, token, i)
            logprobs = _write_column(logprobs, tf.where(alive, logprob, 0.0), i)
            model_logprobs = _write_column(model_logprobs, tf.where(alive, model_logprob, 0.0), i)
            mask = _write_column(mask, alive, i)
            if self.eos_id is not None:
                finished = tf.logical_or(finished, tf.equal(token, self.eos_id))
            index = prompt_len + i
            if self.use_cache:
                hidden, cache = self.model.hidden_states_cached(
                    token[:, None], cache, index, key_mask, (real_lengths + i)[:, None], offset)
            else:
                cache = _write_column(cache, token, index)
                hidden = self._uncached_hidden(cache, key_mask, prompt_positions, new_positions,
                                               index, offset)
            logits = self.model.logits_from_hidden(hidden[:, -1])
            return i + 1, logits, cache, finished, tokens, logprobs, model_logprobs, mask

        def not_done(i, logits, cache, finished, *outputs):
            return tf.logical_and(i < limit, tf.logical_not(tf.reduce_all(finished)))

        zeros = tf.zeros([batch, new], tf.float32)
        state = (tf.constant(0), logits, cache, tf.zeros([batch], tf.bool),
                 tf.fill([batch, new], FILLER_ID), zeros, zeros, tf.zeros([batch, new], tf.bool))
        _, _, _, finished, tokens, logprobs, model_logprobs, mask = tf.while_loop(
            not_done, step, state, maximum_iterations=new)
        return {"tokens": tokens, "mask": mask, "logprobs": logprobs,
                "model_logprobs": model_logprobs, "finished": finished,
                "lengths": tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)}

    def _uncached_hidden(self, token_ids, key_mask, prompt_positions, new_positions, index, offset):
        """States [batch, 1, d_model] at column `index`, from a full pass over every column."""
        positions = tf.concat([prompt_positions, new_positions], axis=1)
        hidden = self.model.hidden_states(token_ids, key_mask, positions=positions, embedding_offset=offset)
        return tf.gather(hidden, index, axis=1)[:, None]

    def _choose(self, logits, temperature, top_k, top_p, seed, banned=None):
        """(token, log-prob under the sampling distribution, log-prob under the model) [batch]."""
        allowed = tf.where(self.banned if banned is None else banned, -np.inf, logits)
        greedy = temperature <= 0.0
        policy_logits = filter_logits(allowed / tf.where(greedy, 1.0, temperature), top_k, top_p)
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits); stateless
        # noise makes the draw a pure function of (seed, step).
        uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-20, maxval=1.0)
        sampled = tf.argmax(policy_logits - tf.math.log(-tf.math.log(uniform)), axis=-1,
                            output_type=tf.int32)
        token = tf.where(greedy, tf.argmax(policy_logits, axis=-1, output_type=tf.int32), sampled)
        policy_logprob = tf.gather(tf.nn.log_softmax(policy_logits), token, axis=1, batch_dims=1)
        model_logprob = tf.gather(tf.nn.log_softmax(logits), token, axis=1, batch_dims=1)
        return token, policy_logprob, model_logprob


def _write_column(matrix, column, index):
    """`matrix` [batch, width] with column `index` replaced by `column` [batch]."""
    return dynamic_update_slice(matrix, tf.cast(column, matrix.dtype)[:, None],
                                tf.stack([tf.zeros([], tf.int32), index]))
