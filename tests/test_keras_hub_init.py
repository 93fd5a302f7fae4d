"""`tfpref preset`: randomly initialised keras-hub presets that train like any other, and its bad input."""
import json

import keras_hub
import numpy as np

from helpers import run_cli_in_process, tiny_config, write_tiny_corpus
from keras_hub_presets import save_tiny_gpt2_preset
from tfpref.cli import main as tfpref_main
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.training.run import train


def preset_command(args):
    return run_cli_in_process(lambda argv: tfpref_main(["preset", *argv]), args)


def test_a_byte_level_gpt2_preset_needs_no_source_and_trains(tmp_path):
    out = tmp_path / "byte_gpt2"
    result = preset_command(["--output", str(out), "--set", "num_layers=1", "--set", "hidden_dim=32",
                             "--set", "intermediate_dim=64", "--set", "max_sequence_length=64", "--seed", "3"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["class_name"] == "GPT2Backbone" and summary["vocabulary_size"] == 258
    backbone = keras_hub.models.Backbone.from_preset(str(out))
    assert (backbone.num_layers, backbone.hidden_dim, backbone.max_sequence_length) == (1, 32, 64)
    assert summary["parameters"] == backbone.count_params()

    tokenizer = KerasHubTokenizer(str(out))
    text = "def f(x):\n    return 'é'\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # every byte has a token

    corpus = write_tiny_corpus(tmp_path)
    config = tiny_config(tmp_path / "run", corpus, model="keras_hub", preset=str(out), train_steps=2)
    assert train(config, show_progress=False)["step"] == 2

    again = preset_command(["--output", str(tmp_path / "again"), "--set", "num_layers=1", "--set", "hidden_dim=32",
                            "--set", "intermediate_dim=64", "--set", "max_sequence_length=64", "--seed", "3"])
    first = keras_hub.models.Backbone.from_preset(str(tmp_path / "again"))
    assert again.returncode == 0
    for a, b in zip(backbone.weights, first.weights):  # the seed decides the weights
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_source_preset_gives_its_family_and_tokenizer_with_new_sizes_and_new_weights(tmp_path):
    source = save_tiny_gpt2_preset(tmp_path / "source")
    out = tmp_path / "smaller"
    result = preset_command(["--output", str(out), "--source", source, "--set", "num_layers=1", "--seed", "5"])
    assert result.returncode == 0, result.stderr
    small = keras_hub.models.Backbone.from_preset(str(out))
    original = keras_hub.models.Backbone.from_preset(source)
    assert small.num_layers == 1 and small.hidden_dim == original.hidden_dim
    assert small.vocabulary_size == original.vocabulary_size
    assert not np.array_equal(small.token_embedding.embeddings.numpy(), original.token_embedding.embeddings.numpy())
    text = "the def ret = x"
    np.testing.assert_array_equal(KerasHubTokenizer(str(out)).encode(text), KerasHubTokenizer(source).encode(text))


def test_bad_preset_commands_are_one_line_errors(tmp_path):
    source = save_tiny_gpt2_preset(tmp_path / "source")
    cases = [
        (["--output", str(tmp_path / "a"), "--source", source, "--set", "depth=2"],
         "--set depth: not a field of the GPT2Backbone config"),
        (["--output", str(tmp_path / "b"), "--set", "num_layers"], "--set num_layers: expected FIELD=VALUE"),
        (["--output", str(tmp_path / "c"), "--set", "vocabulary_size=10"], "the vocabulary is the tokenizer's"),
        (["--output", str(tmp_path / "d"), "--source", str(tmp_path / "nowhere")], "not a keras-hub preset"),
        (["--output", source], f"--output {source} exists and is not empty"),
        (["--output", str(tmp_path / "e"), "--set", "num_layers=two"], "cannot be built so"),
    ]
    for args, message in cases:
        result = preset_command(args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()
