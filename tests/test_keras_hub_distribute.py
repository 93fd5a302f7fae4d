"""A keras-hub preset under mixed precision and under a mirrored strategy on two CPU replicas."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_train, scalar_events, tiny_config, write_tiny_corpus
from keras_hub_presets import preset_backbone, save_tiny_gpt2_preset
from tfpref.models.keras_hub import is_lora_weight
from tfpref.runs import load_run
from tfpref.training.run import train


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_lora_preset_trains_in_mixed_precision(tmp_path, preset, precision, restore_precision_policy):
    corpus = write_tiny_corpus(tmp_path)
    config = tiny_config(tmp_path / "run", corpus, model="keras_hub", preset=preset, lora_rank=2,
                         mixed_precision=precision, train_steps=4, learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert np.isfinite(result["loss"]) and np.isfinite(result["validation_nll"])
    assert ("loss_scale" in scalar_events(tmp_path / "run" / "train")) == (precision == "fp16")
    _, trained, _ = load_run(str(tmp_path / "run"))
    want = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert trained.backbone.hub_backbone.compute_dtype == want  # the preset's layers computed in it
    keras.mixed_precision.set_global_policy("float32")
    base = {v.path: v.numpy() for v in preset_backbone(preset).weights}
    for variable in trained.backbone.weights:  # variables stay float32; only the adapters moved
        assert variable.dtype == tf.float32
        if not is_lora_weight(variable):
            np.testing.assert_array_equal(variable.numpy(), base[variable.path], err_msg=variable.path)


@pytest.mark.slow
def test_a_preset_on_two_mirrored_cpu_replicas_matches_one_replica(tmp_path, preset):
    corpus = write_tiny_corpus(tmp_path)
    common = ["--model", "keras_hub", "--preset", preset, "--lora_rank", "2", "--objective", "mle", "--data", corpus,
              "--seq_len", "32", "--batch_size", "8", "--learning_rate", "1e-2", "--train_steps", "2",
              "--eval_batches", "2", "--no_progress", "--no-export", "--no-jit_compile"]
    one = run_train([*common, "--model_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    # Two logical CPUs must be set up before TensorFlow starts: a new process.
    two = run_train([*common, "--model_dir", str(tmp_path / "two"), "--strategy", "mirrored", "--cpu_replicas", "2"])
    assert two.returncode == 0, two.stderr
    reader_one = tf.train.load_checkpoint(str(tmp_path / "one" / "checkpoints"))
    reader_two = tf.train.load_checkpoint(str(tmp_path / "two" / "checkpoints"))
    names = [n for n in reader_one.get_variable_to_shape_map() if n.startswith("weights/")]
    assert any("lora_kernel_b" in n for n in names)
    for name in names:
        np.testing.assert_allclose(reader_one.get_tensor(name), reader_two.get_tensor(name), atol=1e-5, err_msg=name)
