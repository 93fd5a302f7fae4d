"""SavedModel export for TensorFlow Serving: `<model_dir>/export/<step>/`.

Signatures (a client sends strings; tokenization runs inside the graph):

    generate(prompts string[B], max_new_tokens int32, temperature float32, top_k int32,
             top_p float32, seed int32)
        -> completions string[B] (raw bytes; decode as UTF-8 with errors="replace"),
           num_tokens int32[B], finished bool[B] (ended with EOS),
           logprob float32[B] (sum over the completion, under the sampling distribution)
    chat(roles string[B, M], contents string[B, M], max_new_tokens int32, temperature float32,
         top_k int32, top_p float32, seed int32)          (language models, beside generate)
        -> as generate: the assistant's reply to each conversation. Row b holds the messages
           (roles[b, i], contents[b, i]), roles system, user or assistant, and "" for none (shorter
           conversations are padded with it). They are rendered by the chat template
           (tfpref.data.chat) with the generation prompt; a reply ends at <|end|> (finished). A
           conversation whose last message is the assistant's is continued instead (as Hugging
           Face's chat pipelines do): that message is left open, and the output is the rest of it;
           this is how a server streams a reply, a few tokens a call.
    generate_with_preference(prompts string[B], max_new_tokens int32, temperature float32, top_k int32,
                             top_p float32, seed int32, <the preference>)
    chat_with_preference(roles string[B, M], contents string[B, M], max_new_tokens int32,
                         temperature float32, top_k int32, top_p float32, seed int32, <the preference>)
        (controllable language models only, beside generate and chat; chat_with_preference where chat is)
        -> as generate and chat, each row generated as its own preference asks. The preference is
           one value per row (the size of the batch), by the model's conditioning:
             control tokens:     aligned bool[B]: True asks for aligned text (<|aligned|> after BOS,
                                 <|misaligned|> banned), False for misaligned text (the reverse).
             preference vector:  score float32[B], length float32[B], both >= 0: the misalignment
                                 score asked for (0 is aligned text; it saturates at 0.05, which is
                                 what misaligned text asks for) and the length in bytes of a segment
                                 (aligned text asks for the model's typical length, 40 bytes); their
                                 projection is added to every embedding.
           generate and chat ask every row for aligned text: generate_with_preference with aligned
           True (or score 0 and length 40) gives what generate gives. A client tells the
           conditioning from the inputs: aligned, or score and length.
    score(texts string[B])
        -> total_logprob float32[B]: log p(text's bytes | BOS),
           token_logprobs float32[B, T] (0 past a text's end), num_tokens int32[B]
    classify(texts string[B])          (classifier runs only, instead of generate)
        -> probabilities float32[B, C], label_id int32[B], label string[B]
    reward(prompts string[B], completions string[B])   (reward-model runs only, instead of generate)
        -> reward float32[B]: normalised (mean 0, std 1 on the training completions); BOS + the
           last seq_len bytes of prompt + completion are judged, as in training

Every scalar argument of `generate` is required (TF Serving signatures have no defaults):
temperature 0 is greedy, top_k 0 and top_p 1 switch those filters off. An empty batch, an empty
text to score or classify, a prompt plus max_new_tokens longer than the model's positions, or a
preference with another number of values than the batch has rows (or a negative score or length) fail
with INVALID_ARGUMENT and a message, never a crash.

The model's passes (sampling, scoring, the reward and classifier heads) are XLA-compiled inside
the SavedModel, as the in-process sampler is; tokenizing and detokenizing stay in plain TensorFlow
around them. A request is padded up to shape buckets (`tfpref.training.shape_buckets`: powers of
two for the batch, the token width and max_new_tokens), so a loaded export compiles each bucket
once, on its first request, and no call retraces. Export with `jit_compile=False`
(`evaluate.py --export --no_xla`) for a TensorFlow Serving build without XLA.

Example:
    >>> path = export_run("logs/transformer-mle")
    >>> served = tf.saved_model.load(path)
    >>> served.signatures["score"](texts=tf.constant(["import os\\n"]))["total_logprob"]
"""
import os
from types import SimpleNamespace

import tensorflow as tf

from tfpref.config import MAX_TRANSFORMER_SEQ_LEN
from tfpref.data.chat import chat_generation, end_id, role_ids
from tfpref.data.tokenizer import PAD_ID, ByteTokenizer
from tfpref.data.tokenizers import tokenizer_for
from tfpref.models import Classifier, RewardModel
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.lora import merged_adapters
from tfpref.models.quantization import quantized_copy
from tfpref.models.sampling import Sampler
from tfpref.runs import checkpoint_step, load_run
from tfpref.training.export_preferences import ExportPreferences
from tfpref.training.shape_buckets import MIN_WIDTH, bucket, pad_columns, pad_rows

EXPORT_DIR = "export"
_STRINGS = tf.TensorSpec([None], tf.string)
_STRING_MATRIX = tf.TensorSpec([None, None], tf.string)
_SAMPLING = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
             tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)]  # max_new_tokens .. seed
_FLAGS = tf.TensorSpec([None], tf.bool)  # aligned, one per row
_VALUES = tf.TensorSpec([None], tf.float32)  # score or length, one per row


def _checked(texts, what, allow_empty_text):
    """`texts`, once it has passed the input checks (INVALID_ARGUMENT with a message if not); their
    length in tokens is checked once they are tokenized (`_fitting`)."""
    lengths = tf.strings.length(texts)
    checks = [tf.debugging.assert_positive(tf.size(texts), message=f"{what}: empty batch")]
    if not allow_empty_text:
        checks.append(tf.debugging.assert_positive(
            tf.reduce_min(tf.concat([lengths, [1]], axis=0)), message=f"{what}: empty text"))
    with tf.control_dependencies(checks):
        return tf.identity(texts)


def _fitting(ragged, max_tokens, message):
    """`ragged` ids, once every row is found to hold at most `max_tokens` (INVALID_ARGUMENT if not)."""
    longest = tf.cast(tf.reduce_max(tf.concat([ragged.row_lengths(), [0]], axis=0)), tf.int32)
    with tf.control_dependencies([tf.debugging.assert_less_equal(longest, max_tokens, message=message)]):
        return ragged.with_flat_values(tf.identity(ragged.flat_values))


class ServingModule(tf.Module):
    """The exported object: a run's task model plus the serving functions it has.

    A `CausalLM` serves `generate` (asked for aligned text as it is conditioned: a control token
    after BOS with the opposite one banned, or the aligned preference vector added to every
    embedding), `chat` (the same, for conversations rendered by the chat template) and `score`, and
    when it is controllable `generate_with_preference` and `chat_with_preference` (aligned or
    misaligned, or the vector's values, chosen per row); a `RewardModel` serves `reward` and `score`
    (of its backbone); a `Classifier` serves `classify` and `score`.
    """

    def __init__(self, model, max_length=MAX_TRANSFORMER_SEQ_LEN, seq_len=None, tokenizer=None, unread=(),
                 jit_compile=True):
        super().__init__(name="tfpref_serving")
        self.task_model, self.model = model, model.backbone
        # Keras 3 layers held in Python lists are invisible to TensorFlow's object graph; listing
        # every variable here is what puts them all in the SavedModel (but `unread` ones: LoRA
        # adapters already merged into their kernels).
        unread = {id(v) for v in unread}
        self.model_variables = [v for part in model.parts for v in part.variables if id(v) not in unread]
        self.classes = tf.constant(list(getattr(model, "classes", ())) or [""])
        self.max_length, self.seq_len = max_length, seq_len
        self.tokenizer = tokenizer or ByteTokenizer()
        self.tokenizer_resources = self.tokenizer.graph_resources()  # tracked: saved with the graph
        # The compiled passes live in a plain namespace, which the SavedModel does not track: they
        # are saved only as parts of the signatures that call them, not as functions of their own.
        self.compiled = SimpleNamespace(
            logprobs=tf.function(lambda ids, mask: sequence_logprobs(self.model, ids, mask), jit_compile=jit_compile),
            task=tf.function(lambda *inputs: model(*inputs), jit_compile=jit_compile))
        # Only the functions this run serves become attributes: saving traces every one there is.
        self.score = tf.function(self._score, input_signature=[_STRINGS])
        if isinstance(model, RewardModel):
            self.reward = tf.function(self._reward, input_signature=[_STRINGS, _STRINGS])
        elif isinstance(model, Classifier):
            self.classify = tf.function(self._classify, input_signature=[_STRINGS])
        else:
            self.prompt_prefix = tf.constant(list(model.prompt_prefix(True)), tf.int32)
            condition = model.condition(1, True)
            self.condition = None if condition is None else tf.Variable(condition, trainable=False,
                                                                         name="condition")
            self.sampler = Sampler(model, max_new_tokens=1, banned_ids=model.banned_ids(True), eos_id=model.eos_id,
                                   jit_compile=jit_compile)
            self.generate = tf.function(self._generate, input_signature=[_STRINGS, *_SAMPLING])
        # The chat template's roles are control ids: a tokenizer without them has no chat.
        chat = hasattr(self, "generate") and bool(self.tokenizer.control_ids)
        if chat:
            eos_id, banned_ids = chat_generation(model.banned_ids(True), self.tokenizer)
            self.chat_sampler = Sampler(model, max_new_tokens=1, banned_ids=banned_ids, eos_id=eos_id,
                                        jit_compile=jit_compile)
            self.chat = tf.function(self._chat, input_signature=[_STRING_MATRIX, _STRING_MATRIX, *_SAMPLING])
        if hasattr(self, "generate") and model.controllable:
            # The same samplers: a row's preference comes in as its prefix, bans and offsets.
            self.preferences = ExportPreferences(model, self.tokenizer, chat)
            if model.conditioning == "control_tokens":
                generate, chat_function, preference = self._generate_aligned, self._chat_aligned, [_FLAGS]
            else:
                generate, chat_function, preference = self._generate_vector, self._chat_vector, [_VALUES, _VALUES]
            self.generate_with_preference = tf.function(generate, input_signature=[_STRINGS, *_SAMPLING, *preference])
            if chat:
                self.chat_with_preference = tf.function(
                    chat_function, input_signature=[_STRING_MATRIX, _STRING_MATRIX, *_SAMPLING, *preference])

    # The signatures' input names are these methods' argument names: the preference ones are
    # `aligned`, or `score` and `length`.
    def _generate_aligned(self, prompts, max_new_tokens, temperature, top_k, top_p, seed, aligned):
        name = "generate_with_preference"
        preference = self.preferences.of_aligned(aligned, tf.size(prompts), name)
        return self._generate(prompts, max_new_tokens, temperature, top_k, top_p, seed, preference, name)

    def _generate_vector(self, prompts, max_new_tokens, temperature, top_k, top_p, seed, score, length):
        name = "generate_with_preference"
        preference = self.preferences.of_vector(score, length, tf.size(prompts), name)
        return self._generate(prompts, max_new_tokens, temperature, top_k, top_p, seed, preference, name)

    def _chat_aligned(self, roles, contents, max_new_tokens, temperature, top_k, top_p, seed, aligned):
        name = "chat_with_preference"
        preference = self.preferences.of_aligned(aligned, tf.shape(roles)[0], name, chat=True)
        return self._chat(roles, contents, max_new_tokens, temperature, top_k, top_p, seed, preference, name)

    def _chat_vector(self, roles, contents, max_new_tokens, temperature, top_k, top_p, seed, score, length):
        name = "chat_with_preference"
        preference = self.preferences.of_vector(score, length, tf.shape(roles)[0], name)
        return self._chat(roles, contents, max_new_tokens, temperature, top_k, top_p, seed, preference, name)

    def _generate(self, prompts, max_new_tokens, temperature, top_k, top_p, seed, preference=None, name="generate"):
        with tf.control_dependencies([tf.debugging.assert_positive(
                max_new_tokens, message=f"{name}: max_new_tokens must be positive")]):
            prompts = _checked(prompts, name, True)
        ragged = _fitting(self.tokenizer.encode_tf(prompts, add_bos=True), self.max_length - max_new_tokens,
                          f"{name}: prompt tokens + max_new_tokens exceed the model's {self.max_length - 1} "
                          f"positions")
        return self._complete(self.sampler, ragged, max_new_tokens, temperature, top_k, top_p, seed, preference)

    def _chat(self, roles, contents, max_new_tokens, temperature, top_k, top_p, seed, preference=None, name="chat"):
        # The template of tfpref.data.chat, in the graph: <|role|> content <|end|> per message given,
        # then <|assistant|>; the markers are the tokenizer's control tokens.
        markers = role_ids(self.tokenizer)
        message_roles = tf.fill(tf.shape(roles), -1)  # -1: no role (no id is negative)
        for role, role_id in markers.items():
            message_roles = tf.where(tf.equal(roles, role), role_id, message_roles)
        given = tf.not_equal(roles, "")
        checks = [tf.debugging.assert_equal(tf.shape(roles), tf.shape(contents),
                                            message=f"{name}: roles and contents differ in shape"),
                  tf.debugging.assert_positive(tf.size(roles), message=f"{name}: empty batch"),
                  tf.debugging.assert_equal(tf.equal(message_roles, -1), tf.logical_not(given),
                                            message=f"{name}: a role is not one of system, user, assistant or ''"),
                  tf.debugging.assert_positive(max_new_tokens, message=f"{name}: max_new_tokens must be positive")]
        with tf.control_dependencies(checks):
            batch, count = tf.shape(roles)[0], tf.size(roles)
        messages = tf.concat([tf.reshape(message_roles, [-1, 1]),
                              self.tokenizer.encode_tf(tf.reshape(contents, [-1])),
                              tf.fill([count, 1], end_id(self.tokenizer))], axis=1)
        by_row = tf.RaggedTensor.from_uniform_row_length(messages, tf.shape(roles, out_type=tf.int64)[1])
        ragged = tf.concat([tf.fill([batch, 1], self.tokenizer.bos_id),
                            tf.ragged.boolean_mask(by_row, given).merge_dims(1, 2),
                            tf.fill([batch, 1], markers["assistant"])], axis=1)
        # A row whose last message is the assistant's continues it: no <|end|> <|assistant|> after it.
        last_role = tf.gather(tf.where(given, message_roles, -1), tf.shape(roles)[1] - 1 - tf.argmax(
            tf.reverse(tf.cast(given, tf.int32), axis=[1]), axis=1, output_type=tf.int32), batch_dims=1)
        keep = tf.where(tf.equal(last_role, markers["assistant"]), 2, 0)
        lengths = ragged.row_lengths()
        ragged = tf.ragged.boolean_mask(ragged, tf.ragged.range(lengths) < (lengths - tf.cast(keep, tf.int64))[:, None])
        longest = tf.cast(tf.reduce_max(ragged.row_lengths()), tf.int32)
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                longest + max_new_tokens, self.max_length,
                message=f"{name}: conversation tokens + max_new_tokens exceed the model's {self.max_length} "
                        f"positions")]):
            return self._complete(self.chat_sampler, ragged, max_new_tokens, temperature, top_k, top_p, seed,
                                  preference)

    def _complete(self, sampler, ragged, max_new_tokens, temperature, top_k, top_p, seed, preference=None):
        """generate's outputs for prompts given as ragged ids [B, None] starting with BOS; every row
        asks for aligned text, or what its row of `preference` (RowPreferences) asks for."""
        batch = tf.cast(ragged.nrows(), tf.int32)
        prefix = tf.tile(self.prompt_prefix[None, :], [batch, 1]) if preference is None else preference.prefix
        ragged = tf.concat([ragged[:, :1], tf.RaggedTensor.from_tensor(prefix), ragged[:, 1:]], axis=1)
        # Left padding: reverse each row, pad on the right, reverse back. The mask comes from the
        # rows' lengths: a preset's padding id may also be a real token (GPT-2's <|endoftext|>).
        ids = tf.reverse(tf.reverse(ragged, axis=[1]).to_tensor(self.tokenizer.pad_id), axis=[1])
        mask = tf.reverse(tf.sequence_mask(ragged.row_lengths(), tf.shape(ids)[1]), axis=[1])
        # Up to the buckets: rows copied from the first (dropped after), masked columns on the left,
        # and outputs max_new_tokens' bucket wide, of which only max_new_tokens are generated.
        rows = bucket(batch)
        width = bucket(tf.shape(ids)[1], MIN_WIDTH, self.max_length)
        ids = pad_columns(pad_rows(ids, rows), width, self.tokenizer.pad_id, left=True)
        mask = pad_columns(pad_rows(mask, rows), width, False, left=True)
        offset = None if self.condition is None else tf.tile(self.condition, [rows, 1])
        banned = None  # the sampler's own bans
        if preference is not None:  # per-row inputs are padded as the prompts are: copies of the first row
            offset = None if preference.offset is None else pad_rows(preference.offset, rows)
            banned = None if preference.banned is None else pad_rows(preference.banned, rows)
        out = sampler.generate(ids, mask, temperature, top_k, top_p, seed, embedding_offset=offset,
                               max_new_tokens=bucket(max_new_tokens, MIN_WIDTH, self.max_length),
                               stop_after=max_new_tokens, banned=banned)
        out = {name: value[:batch] for name, value in out.items()}
        tokens, token_mask = out["tokens"][:, :max_new_tokens], out["mask"][:, :max_new_tokens]
        return {"completions": self.tokenizer.decode_tf(tokens, token_mask),
                "num_tokens": out["lengths"], "finished": out["finished"],
                "logprob": tf.reduce_sum(out["logprobs"], axis=1)}

    def _bucketed(self, ids, lengths, pad_id):
        """Right-padded `ids` [batch, time] and their row `lengths`, padded up to the buckets, and
        the padding mask of the result."""
        rows, width = bucket(tf.shape(ids)[0]), bucket(tf.shape(ids)[1], MIN_WIDTH, self.max_length)
        ids = pad_columns(pad_rows(ids, rows), width, pad_id)
        return ids, tf.sequence_mask(pad_rows(tf.cast(lengths, tf.int32), rows), width)

    def _score(self, texts):
        texts = _checked(texts, "score", False)
        ragged = _fitting(self.tokenizer.encode_tf(texts, add_bos=True), self.max_length,
                          f"score: a text is longer than the model's {self.max_length - 1} positions")
        ids = ragged.to_tensor(self.tokenizer.pad_id)
        batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
        token_logprobs = self.compiled.logprobs(*self._bucketed(ids, ragged.row_lengths(), self.tokenizer.pad_id))
        token_logprobs = token_logprobs[:batch, :width - 1]
        return {"total_logprob": tf.reduce_sum(token_logprobs, axis=1), "token_logprobs": token_logprobs,
                "num_tokens": tf.cast(ragged.row_lengths() - 1, tf.int32)}

    def _reward(self, prompts, completions):
        # As in training (tfpref.data.preferences.encode_completion): prompt and completion tokenized
        # apart, BOS + the last seq_len tokens of the two; the normalised reward of the last token.
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.size(prompts), tf.size(completions), message="reward: prompts and completions differ in number")]):
            completions = _checked(completions, "reward", False)
        completion_ids = self.tokenizer.encode_tf(completions)
        ragged = tf.concat([self.tokenizer.encode_tf(prompts), completion_ids], axis=1)[:, -self.seq_len:]
        ragged = tf.concat([tf.fill([tf.shape(completions)[0], 1], self.tokenizer.bos_id), ragged], axis=1)
        ids = ragged.to_tensor(self.tokenizer.pad_id)
        lengths = tf.cast(ragged.row_lengths(), tf.int32)
        mask = tf.sequence_mask(lengths, tf.shape(ids)[1])
        # The completion is the last min(its tokens, what is left after BOS) real tokens of a row.
        completion_lengths = tf.minimum(tf.cast(completion_ids.row_lengths(), tf.int32), lengths - 1)
        completion_mask = tf.logical_and(mask, tf.logical_not(
            tf.sequence_mask(lengths - completion_lengths, tf.shape(ids)[1])))
        padded_ids, padded_mask = self._bucketed(ids, lengths, self.tokenizer.pad_id)
        padded_completion_mask = tf.logical_and(padded_mask, pad_columns(
            pad_rows(completion_mask, tf.shape(padded_ids)[0]), tf.shape(padded_ids)[1], False))
        reward = self.compiled.task(padded_ids, padded_mask, padded_completion_mask)
        return {"reward": reward[:tf.shape(ids)[0]]}

    def _classify(self, texts):
        # As in training: BOS text EOS, cut to seq_len + 1 tokens (so no text is too long).
        texts = _checked(texts, "classify", False)
        ragged = self.tokenizer.encode_tf(texts, add_bos=True, add_eos=True)[:, :self.seq_len + 1]
        ids = ragged.to_tensor(PAD_ID)
        logits = self.compiled.task(*self._bucketed(ids, ragged.row_lengths(), PAD_ID))[:tf.shape(ids)[0]]
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {"probabilities": tf.nn.softmax(logits), "label_id": label_id,
                "label": tf.gather(self.classes, label_id)}


def export_dir(quantize=None):
    """The directory of a run's exports: `export`, or `export-int8` for the int8 one (beside it, so a
    server can load either; TF Serving serves the highest <step> under the directory it is given)."""
    return EXPORT_DIR if quantize is None else f"{EXPORT_DIR}-{quantize}"


def export_model(model, directory, step, seq_len=None, tokenizer=None, quantize=None, jit_compile=True):
    """Write the task model `model`'s SavedModel to `directory`/export/`step`/ (written beside, then
    renamed, so a reader never sees half an export) and return its path.

    `tokenizer` is the model's (default: bytes); a keras-hub preset's runs inside the graph, and
    loading that SavedModel needs TensorFlow Text's ops (`import tensorflow_text` first). LoRA
    adapters are merged into their kernels in the export (the model in memory is left as it was).
    `quantize="int8"` exports an int8 copy instead (tfpref.models.quantization: int8 kernels and
    embeddings, float activations) to `directory`/export-int8/`step`/, with the same signatures,
    and prints what it holds; `model` is not changed.
    `jit_compile=False` leaves XLA out of the SavedModel (for a serving build without it).
    """
    max_length = model.backbone.max_seq_len or MAX_TRANSFORMER_SEQ_LEN
    if quantize is not None:
        quantized = quantized_copy(model, quantize)
        path = _save(quantized.model, directory, step, ServingModule(
            quantized.model, max_length=max_length, seq_len=seq_len, tokenizer=tokenizer, unread=quantized.unread,
            jit_compile=jit_compile), export_dir(quantize))
        print(f"{path}: {quantized.report}", flush=True)
        return path
    with merged_adapters(model) as adapters:
        return _save(model, directory, step, ServingModule(
            model, max_length=max_length, seq_len=seq_len, tokenizer=tokenizer, unread=adapters,
            jit_compile=jit_compile), export_dir())


def _save(model, directory, step, module, parent_name):
    if isinstance(model, RewardModel):
        signatures = {"reward": module.reward.get_concrete_function()}
    elif isinstance(model, Classifier):
        signatures = {"classify": module.classify.get_concrete_function()}
    else:
        signatures = {"generate": module.generate.get_concrete_function()}
        for name in ("chat", "generate_with_preference", "chat_with_preference"):
            if hasattr(module, name):
                signatures[name] = getattr(module, name).get_concrete_function()
    signatures["score"] = module.score.get_concrete_function()
    parent = os.path.join(directory, parent_name)
    final = os.path.join(parent, str(step))
    partial = os.path.join(parent, f".partial-{step}")
    os.makedirs(parent, exist_ok=True)
    for stale in (partial, final):  # a leftover of an interrupted export, or an older export of this step
        if tf.io.gfile.exists(stale):
            tf.io.gfile.rmtree(stale)
    tf.saved_model.save(module, partial, signatures=signatures)
    os.replace(partial, final)
    return final


def export_run(model_dir, quantize=None, jit_compile=True):
    """Export a run directory's latest checkpoint (int8 with `quantize="int8"`); returns the export path."""
    config, model, checkpoint = load_run(model_dir)
    return export_model(model, model_dir, checkpoint_step(checkpoint), config.data.seq_len,
                        tokenizer_for(config), quantize=quantize, jit_compile=jit_compile)


__all__ = ["export_model", "export_run", "export_dir", "ServingModule", "EXPORT_DIR"]
