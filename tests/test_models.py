import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.config import ModelConfig
from tfpref.models import ClassifierHead, ScalarHead, build_model, sequence_logprobs
from tfpref.models.layers import CausalSelfAttention, TransformerBlock

TINY = dict(d_model=32, num_layers=2, num_heads=4, ff_dim=64)
MODELS = ["transformer", "lstm"]


def tiny_model(kind, **overrides):
    return build_model(ModelConfig(model=kind, **{**TINY, **overrides}), seed=0)


def random_tokens(batch=2, length=12, seed=0):
    return tf.random.stateless_uniform([batch, length], [seed, 1], 16, 272, dtype=tf.int32)


@pytest.mark.parametrize("kind", MODELS)
def test_model_outputs_float32_logits_over_the_vocabulary(kind):
    logits = tiny_model(kind)(random_tokens())
    assert logits.shape == (2, 12, 272) and logits.dtype == tf.float32


@pytest.mark.parametrize("kind", MODELS)
def test_model_is_causal(kind):
    model, tokens = tiny_model(kind), random_tokens().numpy()
    changed = tokens.copy()
    changed[:, 7:] = 20
    np.testing.assert_allclose(model(tokens)[:, :7], model(changed)[:, :7], atol=1e-5)
    assert not np.allclose(model(tokens)[:, 7:], model(changed)[:, 7:])


@pytest.mark.parametrize("kind", MODELS)
def test_padding_after_the_end_does_not_change_real_positions(kind):
    model, tokens = tiny_model(kind), random_tokens().numpy()
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 9:] = False
    padded = tokens.copy()
    padded[:, 9:] = 0
    np.testing.assert_allclose(model(tokens, padding_mask=mask)[:, :9],
                               model(padded, padding_mask=mask)[:, :9], atol=1e-5)


@pytest.mark.parametrize("kind", MODELS)
def test_model_round_trips_through_keras_serialization(kind, tmp_path):
    model, tokens = tiny_model(kind, tie_embeddings=False, dropout=0.1), random_tokens()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert restored.get_config() == model.get_config()
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(tokens), model(tokens), atol=1e-6)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "m.keras")(tokens), model(tokens), atol=1e-6)


def test_conv_encoder_sees_both_sides_within_its_window_and_ignores_padding():
    model, tokens = tiny_model("conv", dropout=0.1), random_tokens(length=40).numpy()
    states = model.hidden_states(tokens)
    assert states.shape == (2, 40, 32)
    changed = tokens.copy()
    changed[:, 20] = 20
    moved = np.abs(model.hidden_states(changed) - states).max(axis=(0, 2))
    # Two layers of five-byte kernels, dilations 1 and 2: a byte reaches 6 positions either side.
    assert np.all(moved[14:27] > 0) and np.all(moved[:14] == 0) and np.all(moved[27:] == 0)
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 30:] = False
    padded = tokens.copy()
    padded[:, 30:] = 0
    np.testing.assert_allclose(model.hidden_states(tokens, mask)[:, :30],
                               model.hidden_states(padded, mask)[:, :30], atol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert restored.get_config() == model.get_config()
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored.hidden_states(tokens), states, atol=1e-6)


@pytest.mark.parametrize("layer", [
    CausalSelfAttention(32, 4, dropout=0.1, seed=3),
    TransformerBlock(32, 4, 64, dropout=0.1, num_layers=2, seed=5),
    ScalarHead(),
    ClassifierHead(num_classes=3, dropout=0.2),
])
def test_layers_round_trip_their_config(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_heads_shapes_and_last_token_pooling():
    hidden = tf.reshape(tf.range(2 * 4 * 3, dtype=tf.float32), [2, 4, 3])
    mask = tf.constant([[True, True, True, False], [True] * 4])
    assert ScalarHead()(hidden).shape == (2, 4)
    head = ClassifierHead(num_classes=5)
    assert head(hidden, mask).shape == (2, 5)
    from tfpref.models.heads import last_valid_state
    np.testing.assert_array_equal(last_valid_state(hidden, mask), hidden.numpy()[[0, 1], [2, 3]])


@pytest.mark.parametrize("kind", MODELS)
def test_sequence_logprobs_match_a_numpy_log_softmax(kind):
    model, tokens = tiny_model(kind), random_tokens(length=10)
    mask = np.ones(tokens.shape, bool)
    mask[1, 6:] = False
    logits = model(tokens[:, :-1], padding_mask=mask[:, :-1]).numpy().astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    targets = tokens.numpy()[:, 1:]
    expected = np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0] * mask[:, 1:]
    np.testing.assert_allclose(sequence_logprobs(model, tokens, tf.constant(mask)), expected, atol=1e-5)


def test_split_causal_attention_equals_the_unsplit_computation():
    # Length 128 takes the split path (two query halves), 127 does not; causality means the first
    # 127 outputs must agree.
    layer = CausalSelfAttention(32, 4, seed=0)
    x = tf.random.stateless_normal([2, 128, 32], [0, 1])
    from tfpref.models.layers import attention_mask
    split = layer(x, attention_mask(128))
    whole = layer(x[:, :127], attention_mask(127))
    np.testing.assert_allclose(split[:, :127], whole, atol=1e-5)
