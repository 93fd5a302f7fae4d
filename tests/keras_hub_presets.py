"""Tiny keras-hub presets for tests: built from a config, saved with `save_to_preset`, nothing downloaded."""
import os

import keras
import keras_hub
from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode  # the byte alphabet GPT-2 uses

# GPT-2's byte-to-unicode alphabet: every byte is a token, so any text encodes; a few merges make
# some multi-byte tokens, as a real BPE vocabulary has.
_MERGES = ["Ġ t", "Ġ a", "e r", "i n", "Ġt h", "Ġth e", "r e", "o n", "d e", "de f", "e t", "r et",
           "Ġ =", "Ġ Ġ", "ĠĠ ĠĠ"]


def tiny_gpt2_vocabulary():
    """(vocabulary dict, merges list) of a tiny byte-level BPE with `<|endoftext|>` at id 0."""
    _, alphabet = bytes_to_unicode()
    vocabulary = {"<|endoftext|>": 0}
    for token in alphabet:
        vocabulary.setdefault(token, len(vocabulary))
    for merge in _MERGES:
        vocabulary.setdefault(merge.replace(" ", ""), len(vocabulary))
    return vocabulary, list(_MERGES)


def save_tiny_gpt2_preset(directory, seed=0, sequence_length=64):
    """A tiny GPT-2 CausalLM (2 layers, width 32) with its tokenizer, saved as a preset in `directory`."""
    keras.utils.set_random_seed(seed)
    vocabulary, merges = tiny_gpt2_vocabulary()
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=sequence_length, dropout=0.0)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    os.makedirs(directory, exist_ok=True)
    model.save_to_preset(str(directory))
    return str(directory)


def tiny_qwen_vocabulary():
    """(vocabulary dict, merges list) of a tiny byte-level BPE laid out as Qwen's: the byte alphabet
    from id 0 (so id 0 is "!", a text token), the merges, then `<|endoftext|>` last."""
    _, alphabet = bytes_to_unicode()
    vocabulary = {}
    for token in list(alphabet) + [merge.replace(" ", "") for merge in _MERGES] + ["<|endoftext|>"]:
        vocabulary.setdefault(token, len(vocabulary))
    return vocabulary, list(_MERGES)


def save_tiny_qwen_preset(directory, seed=0, tie_word_embeddings=False):
    """A tiny Qwen CausalLM (2 layers, width 32, grouped-query attention with 4 query and 2 key-value
    heads, an untied output head by default) with its tokenizer, saved as a preset in `directory`."""
    keras.utils.set_random_seed(seed)
    vocabulary, merges = tiny_qwen_vocabulary()
    tokenizer = keras_hub.models.QwenTokenizer(vocabulary=vocabulary, merges=merges)
    preprocessor = keras_hub.models.QwenCausalLMPreprocessor(tokenizer=tokenizer, sequence_length=64)
    backbone = keras_hub.models.QwenBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=64, tie_word_embeddings=tie_word_embeddings, dtype="float32")
    model = keras_hub.models.QwenCausalLM(backbone=backbone, preprocessor=preprocessor)
    os.makedirs(directory, exist_ok=True)
    model.save_to_preset(str(directory))
    return str(directory)


def preset_backbone(preset):
    """The preset as a run starts from it: tfpref's control tokens added to its vocabulary."""
    from tfpref.config import ModelConfig
    from tfpref.models import build_model

    return build_model(ModelConfig(model="keras_hub", preset=preset))



def export_and_check_against_the_library(policy, tokenizer, directory, prompts, texts, new):
    """Export `policy` (a preset CausalLM) with `tokenizer` in the graph, load it, and check that its greedy
    `generate` of `prompts` and its `score` of `texts` equal the library's sampler and log-probs; returns
    the loaded SavedModel. Loading it needs TensorFlow Text's ops (`import tensorflow_text` first)."""
    import numpy as np
    import tensorflow as tf

    from tfpref.models.logprobs import sequence_logprobs
    from tfpref.models.sampling import Sampler, left_pad
    from tfpref.training.export import export_model

    served = tf.saved_model.load(export_model(policy, str(directory), step=3, seq_len=32, tokenizer=tokenizer,
                                                jit_compile=False))
    assert sorted(served.signatures) == ["chat", "generate", "score"]  # the chat markers are added tokens
    out = served.signatures["generate"](prompts=tf.constant(prompts), max_new_tokens=tf.constant(new),
                                        temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
                                        seed=tf.constant(0))
    library = Sampler(policy, new, banned_ids=policy.banned_ids(), eos_id=policy.eos_id, jit_compile=False)(
        *left_pad([tokenizer.encode(p, add_bos=True) for p in prompts]), temperature=0.0)
    for row in range(len(prompts)):
        tokens = library["tokens"][row][library["mask"][row]]
        assert out["completions"].numpy()[row].decode("utf-8", "replace") == tokenizer.decode(tokens)
    np.testing.assert_array_equal(out["num_tokens"].numpy(), library["lengths"])
    np.testing.assert_allclose(out["logprob"].numpy(), library["logprobs"].sum(1), atol=1e-4)

    scored = served.signatures["score"](texts=tf.constant(texts))
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_bos=True)[None]
        want = sequence_logprobs(policy, ids, np.ones_like(ids, bool)).numpy().sum()
        np.testing.assert_allclose(scored["total_logprob"].numpy()[row], want, atol=1e-4)
        assert scored["num_tokens"].numpy()[row] == ids.shape[1] - 1
    return served
