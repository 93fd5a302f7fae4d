"""Supervised fine-tuning: the rows and masks of each record kind, the loss against NumPy, learning, evaluation."""
import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf

from tfpref.cli import train_main
from tfpref.config import RunConfig, TrainConfig
from tfpref.data.chat import end_id, render
from tfpref.data.preferences import prompt_split
from tfpref.data.sft import encode_sft_record, load_sft_data, read_sft_records, sft_arrays
from tfpref.data.tokenizer import BOS_ID, EOS_ID, ByteTokenizer
from tfpref.errors import UserError
from tfpref.evaluation.generation import SamplingSettings, split_prompts
from tfpref.evaluation.run import evaluate_run
from tfpref.objectives import build_objective
from tfpref.training.run import train

from helpers import TINY_FLAGS, run_cli_in_process, tiny_config, write_tiny_corpus
from test_objectives import FixedLogits, numpy_log_softmax

TOKENIZER = ByteTokenizer()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_rows_train_on_the_completion_of_each_record_kind(tmp_path):
    text = read_sft_records(write_jsonl(tmp_path / "text.jsonl", [{"prompt": "add 2:", "completion": " 3"}]))[0]
    ids, mask = encode_sft_record(text)
    np.testing.assert_array_equal(ids, TOKENIZER.encode("add 2: 3", add_eos=True))
    assert TOKENIZER.decode(ids[mask]) == " 3" and ids[mask][-1] == EOS_ID  # the model learns to stop

    chat = read_sft_records(write_jsonl(tmp_path / "chat.jsonl", [
        {"prompt": [assistant("Hi"), user("add 2")], "completion": [assistant("3")]},
        {"messages": [user("add 2"), assistant("3"), user("add 5"), assistant("6")]}]))
    ids, mask = encode_sft_record(chat[0])  # completion only: the earlier assistant turn is context
    np.testing.assert_array_equal(ids, render([assistant("Hi"), user("add 2"), assistant("3")]))
    assert ids[mask].tolist() == [*TOKENIZER.encode("3"), end_id()]
    ids, mask = encode_sft_record(chat[1])  # a whole conversation: every assistant turn
    np.testing.assert_array_equal(ids, render([user("add 2"), assistant("3"), user("add 5"), assistant("6")]))
    assert ids[mask].tolist() == [*TOKENIZER.encode("3"), end_id(), *TOKENIZER.encode("6"), end_id()]
    assert chat[1].split == prompt_split("add 2") == chat[0].split  # by the first user message


def test_long_records_lose_the_prompt_first_and_rows_are_padded(tmp_path):
    records = read_sft_records(write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "p" * 20, "completion": "abc"}, {"prompt": "q", "completion": "r"}]))
    arrays, cut = sft_arrays(records, seq_len=8)
    assert cut == 1 and arrays["token_ids"].shape == (2, 9)
    long, short = arrays["token_ids"]
    assert long[0] == BOS_ID and TOKENIZER.decode(long) == "ppppabc" and long[-1] == EOS_ID
    assert arrays["completion_mask"][0].sum() == 4 and not arrays["completion_mask"][:, 0].any()
    assert TOKENIZER.decode(short) == "qr" and arrays["padding_mask"][1].sum() == 4  # BOS q r EOS


def test_splits_follow_the_prompt_split(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"add {i}:", "completion": str(i + 1)} for i in range(200)])
    everything = load_sft_data(path, 16)
    assert everything.num_examples == 200
    for split in ("train", "validation", "test"):
        data = load_sft_data(path, 16, split)
        assert data.num_examples == sum(prompt_split(f"add {i}:") == split for i in range(200)) > 0
        assert {prompt_split(r.prompt) for r in data.records} == {split}


@pytest.mark.parametrize("records, message", [
    ([{"prompt": "a", "completion": "b"}, {"messages": [user("a"), assistant("b")]}],
     r":2: a text file has a conversational record"),
    ([{"prompt": "a"}], r":1: field 'completion' is missing"),
    ([{"messages": [user("a")]}], r":1: field 'messages' has no assistant message"),
    ([{"prompt": [user("a")], "completion": "b"}], r":1: field 'completion' must be a list of assistant messages"),
    ([{"prompt": [user("a")], "completion": [user("b")]}], r":1: field 'completion\[0\].role' must be 'assistant'"),
    ([{"messages": [user("a"), {"role": "bot", "content": "b"}]}], r":1: field 'messages\[1\].role' must be one of"),
    ([{"prompt": "a", "completion": ""}], r":1: field 'completion' is empty"),
])
def test_bad_records_name_file_line_and_field(tmp_path, records, message):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(UserError, match=f"^{re.escape(path)}{message}"):
        read_sft_records(path)


def test_bad_sft_data_stops_train_py_with_one_line_and_writes_nothing(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [user("a"), assistant("b")]},
                                               {"messages": [user("a"), {"role": "assistant", "content": 1}]}])
    flags = [*TINY_FLAGS, "--objective", "sft", "--data", bad, "--model_dir", str(tmp_path / "run")]
    done = run_cli_in_process(train_main, flags)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"{bad}:2: field 'messages[1].content' must be a string" in done.stderr
    assert not (tmp_path / "run" / "config.json").exists()
    refused = run_cli_in_process(train_main, [*TINY_FLAGS, "--prompt_loss", "--model_dir", str(tmp_path / "mle")])
    assert refused.returncode == 2 and "--prompt_loss" in refused.stderr  # sft only


def sft_batch():
    """Two rows: BOS p p c c EOS and BOS p c PAD PAD PAD (c: completion)."""
    tokens = np.array([[1, 20, 21, 30, 31, 2], [1, 22, 32, 0, 0, 0]], np.int32)
    padding = tokens != 0
    completion = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]], bool)
    return {"token_ids": tf.constant(tokens), "padding_mask": tf.constant(padding),
            "completion_mask": tf.constant(completion)}


@pytest.mark.parametrize("prompt_loss", [False, True])
def test_loss_and_completion_nll_match_numpy(prompt_loss):
    batch = sft_batch()
    logits = np.random.default_rng(0).normal(size=(2, 5, 40)).astype(np.float32)
    objective = build_objective(RunConfig(train=TrainConfig(objective="sft", prompt_loss=prompt_loss)))
    output = objective.compute(batch, FixedLogits(logits), training=True)

    targets = batch["token_ids"].numpy()[:, 1:]
    logits_of_targets = np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), targets[..., None], -1)
    logp = logits_of_targets[..., 0]
    completion = batch["completion_mask"].numpy()[:, 1:]
    trained = batch["padding_mask"].numpy()[:, 1:] if prompt_loss else completion
    np.testing.assert_allclose(output.losses, -(logp * trained).sum(1) / 5, rtol=1e-5)
    numerator, denominator = output.metrics["nll"]  # completion tokens, whatever is trained
    np.testing.assert_allclose(numerator, -(logp * completion).sum(), rtol=1e-5)
    assert float(denominator) == 4
    assert math.isclose(objective.summarize({"nll": 1.5})["perplexity"], math.exp(1.5))


def test_held_out_prompts_and_references_of_an_sft_split(tmp_path):
    text = load_sft_data(write_jsonl(tmp_path / "t.jsonl", [{"prompt": "add 2:", "completion": " 3 and more"}]), 32)
    assert split_prompts(text, 4, max_new_tokens=5) == [{"prompt": "add 2:", "reference": " 3 an"}]
    chat = load_sft_data(write_jsonl(tmp_path / "c.jsonl", [
        {"messages": [user("add 2"), assistant("3"), user("add 5"), assistant("6")]}]), 32)
    [item] = split_prompts(chat, 4, max_new_tokens=5)
    assert item["messages"] == [user("add 2"), assistant("3"), user("add 5")] and item["reference"] == "6"
    assert item["prompt"] == "<|user|>add 2<|end|><|assistant|>3<|end|><|user|>add 5<|end|><|assistant|>"


@pytest.mark.slow
def test_sft_from_a_pretrained_run_learns_completions_and_evaluates(tmp_path):
    pretrained = tmp_path / "pretrained"
    train(tiny_config(pretrained, write_tiny_corpus(str(tmp_path)), train_steps=2), show_progress=False)
    data = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "count"}, user(f"after {i}?"), assistant(str(i + 1))]}
        for i in range(300)])
    config = tiny_config(tmp_path / "sft", data, objective="sft", init_from=str(pretrained), train_steps=40,
                         learning_rate=1e-2)
    result = train(config, show_progress=False)
    # Uniform over the 272 ids is log(272) = 5.6 nats; the replies are digits and <|end|>.
    assert result["validation_nll"] < 2.5

    report = evaluate_run(str(tmp_path / "sft"), split="test",
                          sampling=SamplingSettings(num_samples=4, max_new_tokens=6, temperature=0.0))
    metrics = report["metrics"]
    assert metrics["nll"] < 2.5 and metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]))
    assert 0 <= metrics["bleu"] <= 1 and 0 <= metrics["rouge_l"] <= 1
    samples = [json.loads(line) for line in open(tmp_path / "sft" / "eval" / "samples.jsonl")]
    assert len(samples) == 4 and any(sample["finished"] for sample in samples)  # replies end at <|end|>
    for sample in samples:  # held-out prompts: conversations up to the reply, which is the reference
        assert sample["prompt"].endswith("<|end|><|assistant|>") and sample["messages"][-1]["role"] == "user"
        assert sample["reference"] == str(int(sample["messages"][-1]["content"][6:-1]) + 1)
        # A learnt reply is digits ended by <|end|>: the stop token, never text.
        assert not sample["finished"] or sample["completion"].isdigit()
