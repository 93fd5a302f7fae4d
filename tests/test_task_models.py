"""Task models: each is one Keras object (config round trip), with a fixed order of parts."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpref.config import ModelConfig, RunConfig, TrainConfig
from tfpref.models import CausalLM, Classifier, RewardModel, build_task_model

TINY = ModelConfig(d_model=16, num_layers=1, num_heads=2, ff_dim=16)
IDS = tf.constant([[1, 40, 41, 42, 2], [1, 50, 51, 0, 0]], tf.int32)
MASK = IDS != 0


def task_model(objective, model="transformer", **align):
    config = RunConfig(model=ModelConfig(**{**vars(TINY), "model": model}), train=TrainConfig(objective=objective),
                       classes=["a", "b", "c"])
    for key, value in align.items():
        setattr(config.align, key, value)
    return build_task_model(config, seed=1)


@pytest.mark.parametrize("objective, kind, heads", [
    ("mle", CausalLM, []), ("conditional", CausalLM, []), ("awr", CausalLM, ["value_head"]),
    ("ppo", CausalLM, ["value_head"]), ("preference_vector", CausalLM, ["preference_projection"]),
    ("classify", Classifier, ["classifier"]), ("reward_model", RewardModel, ["reward_head"]),
])
def test_each_objective_trains_its_task_model_with_its_heads(objective, kind, heads):
    model = task_model(objective)
    assert type(model) is kind and [head.name for head in model.heads] == heads
    assert model.parts[0] is model.backbone
    # Checkpoint keys are the variable paths of the backbone and the heads as they always were.
    assert all(v.path.startswith(("transformer/", *heads)) for part in model.parts for v in part.weights)
    trained = model.trainable_weights_of(freeze_backbone=False)
    assert trained[:len(model.backbone.trainable_weights)] == model.backbone.trainable_weights
    assert model.trainable_weights_of(freeze_backbone=True) == [v for h in model.heads for v in h.trainable_weights]


@pytest.mark.parametrize("objective, align", [
    ("mle", {}), ("awr", {}), ("preference_vector", {}), ("classify", {}),
    ("reward_model", {"reward_pooling": "mean", "code_structure": True}),
])
def test_task_models_round_trip_through_keras_serialization(objective, align):
    model = task_model(objective, **align)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(restored) is type(model) and restored.get_config() == model.get_config()
    for source, target in zip(model.parts, restored.parts):
        for a, b in zip(source.weights, target.weights):
            b.assign(a)
    np.testing.assert_allclose(restored(IDS, MASK), model(IDS, MASK), atol=1e-6)  # logits, rewards or classes


def test_causal_lm_conditioning_decides_how_aligned_text_is_asked_for():
    plain, control, vector = (task_model(name) for name in ("mle", "conditional", "preference_vector"))
    assert plain.prompt_prefix() == () and plain.condition(2) is None and not plain.controllable
    aligned, misaligned = control.prompt_prefix(True), control.prompt_prefix(False)
    assert aligned != misaligned and misaligned[0] in control.banned_ids(True)
    assert aligned[0] not in control.banned_ids(True) and control.condition(2) is None
    assert vector.prompt_prefix() == () and vector.condition(3, True).shape == (3, TINY.d_model)
    assert not np.allclose(vector.condition(1, True), vector.condition(1, False))


def test_reward_model_groups_and_normalises():
    model = task_model("reward_model")
    groups = tf.stack([IDS, IDS[::-1]])  # [2 groups, 2 completions, T]
    masks = groups != 0
    raw = model.group_rewards(groups, masks, masks, normalize=False)
    assert raw.shape == (2, 2)
    np.testing.assert_allclose(raw[1], raw[0][::-1], atol=1e-6)
    model.set_normalization(0.5, 2.0)
    np.testing.assert_allclose(model.group_rewards(groups, masks, masks), (raw - 0.5) / 2.0, atol=1e-6)
