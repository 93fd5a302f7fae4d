"""A LoRA run's export: adapters merged into the kernels, the same function, the model in memory untouched."""
import numpy as np
import pytest
import tensorflow as tf

from keras_hub_presets import save_tiny_gpt2_preset
from tfpref.config import ModelConfig
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub import is_lora_weight
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.lora import adapted_layers, merged_adapters
from tfpref.training.export import export_model


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


def trained_lora_policy(preset):
    """A rank-2 LoRA policy whose adapters are not zero (as after training), seeded."""
    policy = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset, lora_rank=2)), name="causal_lm")
    rng = np.random.default_rng(0)
    for variable in policy.backbone.weights:
        if is_lora_weight(variable):
            variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    return policy


def test_merged_adapters_compute_the_same_function_and_put_everything_back(preset):
    policy = trained_lora_policy(preset)
    ids = np.array([[0, 5, 80, 99, 7, 3]], np.int32)
    mask = np.ones_like(ids, bool)
    before = {v.path: v.numpy() for v in policy.weights}
    adapted = sequence_logprobs(policy, ids, mask).numpy()
    base = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset)), name="causal_lm")
    assert np.abs(adapted - sequence_logprobs(base, ids, mask).numpy()).max() > 1e-3  # the adapters matter

    layers = adapted_layers(policy)
    assert len(layers) == 4  # query and value of 2 blocks
    with merged_adapters(policy) as unread:
        assert len(unread) == 8 and not any(layer.lora_enabled for layer in layers)
        np.testing.assert_allclose(sequence_logprobs(policy, ids, mask).numpy(), adapted, atol=1e-5)
        merged = layers[0]._kernel.numpy()
        a, b = layers[0].lora_kernel_a.numpy(), layers[0].lora_kernel_b.numpy()
        scale = layers[0].lora_alpha / layers[0].lora_rank
        np.testing.assert_allclose(merged, before[layers[0]._kernel.path] + scale * (a @ b), atol=1e-6)
    assert all(layer.lora_enabled for layer in layers)
    for variable in policy.weights:  # bit-identical, base kernels included
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)

    with pytest.raises(RuntimeError):  # put back even when the body fails
        with merged_adapters(policy):
            raise RuntimeError("export failed")
    assert all(layer.lora_enabled for layer in layers)
    np.testing.assert_array_equal(layers[0]._kernel.numpy(), before[layers[0]._kernel.path])


@pytest.mark.slow
def test_a_lora_export_serves_the_adapted_model_without_adapters(tmp_path, preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer; optional, heavy)

    policy = trained_lora_policy(preset)
    tokenizer = KerasHubTokenizer(preset)
    before = {v.path: v.numpy() for v in policy.weights}
    path = export_model(policy, str(tmp_path), step=1, seq_len=32, tokenizer=tokenizer, jit_compile=False)
    for variable in policy.weights:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)

    served = tf.saved_model.load(path)
    saved_names = [v.name for v in served.model_variables]
    assert saved_names and not any("lora_kernel" in name for name in saved_names)
    texts = ["def f(x):\n    return x\n", "import os"]
    scored = served.signatures["score"](texts=tf.constant(texts))["total_logprob"].numpy()
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_bos=True)[None]
        want = sequence_logprobs(policy, ids, np.ones_like(ids, bool)).numpy().sum()
        np.testing.assert_allclose(scored[row], want, atol=1e-4)
