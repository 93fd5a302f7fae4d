"""The chat template: exact layout, assistant masks, message validation, conversational preference records."""
import json
import re

import numpy as np
import pytest

from tfpref.data.chat import (chat_generation, conversation_ids, end_id, parse_messages, render,
                              render_completion, render_text, role_ids, split_key)
from tfpref.data.preferences import encode_completion, load_preferences, preference_arrays, prompt_split
from tfpref.data.tokenizer import BOS_ID, CONTROL_TOKENS, EOS_ID, NUM_SPECIAL, PAD_ID, ByteTokenizer
from tfpref.errors import UserError
from tfpref.models.sampling import DEFAULT_BANNED_IDS

SYSTEM, USER, ASSISTANT, END = 7, 8, 9, 10  # fixed forever: checkpoints depend on them
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "é?"},
        {"role": "assistant", "content": "No"}]


def byte_ids(text):
    return [b + NUM_SPECIAL for b in text.encode("utf-8")]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_role_markers_are_control_tokens_with_fixed_ids():
    names = ("system", "user", "assistant", "end")
    assert [CONTROL_TOKENS[f"<|{name}|>"] for name in names] == [SYSTEM, USER, ASSISTANT, END]
    assert (role_ids()["assistant"], role_ids(ByteTokenizer())["user"], end_id()) == (ASSISTANT, USER, END)
    assert len(set(CONTROL_TOKENS.values())) == len(CONTROL_TOKENS) and max(CONTROL_TOKENS.values()) < NUM_SPECIAL


def test_template_layout_and_assistant_mask():
    expected = ([SYSTEM, *byte_ids("Be brief."), END, USER, *byte_ids("Hi"), END, ASSISTANT, *byte_ids("Yo"), END,
                 USER, *byte_ids("é?"), END, ASSISTANT, *byte_ids("No"), END])
    ids, mask = conversation_ids(CHAT)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(render(CHAT), expected)
    # Trained: the content and <|end|> of each assistant turn, never its <|assistant|> marker.
    assert ByteTokenizer().decode(ids[mask]) == "YoNo" and list(ids[mask]).count(END) == 2
    assert not mask[ids == ASSISTANT].any()
    prompt = render(CHAT[:2], add_generation_prompt=True)
    assert prompt[-1] == ASSISTANT
    assert render_text(CHAT[:2], True) == "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>"
    # A prompt with its generation prompt, then the completion, is the conversation: one template.
    np.testing.assert_array_equal(np.concatenate([prompt, render_completion(CHAT[2:3])]), render(CHAT[:3]))
    np.testing.assert_array_equal(render([("user", "Hi")]), render([{"role": "user", "content": "Hi"}]))


def test_chat_generation_stops_on_end_and_keeps_roles_banned():
    eos_id, banned = chat_generation(DEFAULT_BANNED_IDS)
    assert eos_id == END and END not in banned
    assert {PAD_ID, BOS_ID, EOS_ID, SYSTEM, USER, ASSISTANT} <= set(banned)


def test_conversational_split_is_the_first_user_message():
    assert split_key(CHAT) == "Hi" and split_key("plain") == "plain"
    for text in ("Hi", "add 3", "what is 2+2?", "x" * 40):
        conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": text}]
        assert prompt_split(conversation) == prompt_split(text)


@pytest.mark.parametrize("value, message", [
    ("hello", r"field 'prompt' must be a list of \{'role', 'content'\} messages, got str"),
    ([], r"field 'prompt' is an empty list of messages"),
    (["hi"], r"field 'prompt\[0\]' must be an object with 'role' and 'content', got str"),
    ([{"role": "user"}], r"field 'prompt\[0\].content' is missing"),
    ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}],
     r"field 'prompt\[1\].role' must be one of system, user, assistant, got 'bot'"),
    ([{"role": "user", "content": ["a"]}], r"field 'prompt\[0\].content' must be a string, got list"),
])
def test_bad_messages_name_file_line_and_field(value, message):
    with pytest.raises(UserError, match=f"^data.jsonl:3: {message}$"):
        parse_messages(value, "data.jsonl", 3, "prompt")


PROMPT = [{"role": "system", "content": "s"}, {"role": "user", "content": "add 2"}]


def reply(text):
    return [{"role": "assistant", "content": text}]


def test_conversational_preference_records_load_and_encode_by_the_template(tmp_path):
    data = load_preferences(write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": PROMPT, "chosen": reply("4"), "rejected": reply("5")},
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": reply("hello"), "rejected": reply("go")}]))
    item = data.items[0]
    assert item.prompt == (("system", "s"), ("user", "add 2"))
    assert item.completions == ((("assistant", "4"),), (("assistant", "5"),))
    ids, start = encode_completion(item.prompt, item.completions[0], seq_len=32)
    np.testing.assert_array_equal(ids, [BOS_ID, *render(PROMPT, True), *byte_ids("4"), END])
    assert start == len(ids) - 2  # the completion: "4" and <|end|>
    arrays = preference_arrays(data, seq_len=32)
    assert arrays["token_ids"].shape == (2, 2, 33)
    np.testing.assert_array_equal(arrays["token_ids"][0, 0, :len(ids)], ids)
    assert arrays["completion_mask"][0, 0].sum() == 2
    assert data.split(prompt_split("add 2")).items[0] == item  # split like its first user message
    ranking = load_preferences(write_jsonl(tmp_path / "ranking.jsonl", [
        {"prompt": PROMPT, "completions": [reply("4"), reply("5"), reply("6")], "ranking": [1, 2, 3]}]))
    assert ranking.comparisons()[0][1:3] == ((("assistant", "4"),), (("assistant", "5"),))


@pytest.mark.parametrize("bad, message", [
    ({"prompt": PROMPT, "chosen": "4", "rejected": reply("5")},
     "field 'chosen' must be a list of assistant messages, as 'prompt' is a conversation, got str"),
    ({"prompt": "add 2", "chosen": reply("4"), "rejected": "5"},
     "field 'chosen' must be a string, as 'prompt' is not a conversation, got list"),
    ({"prompt": PROMPT, "chosen": [{"role": "user", "content": "4"}], "rejected": reply("5")},
     r"field 'chosen\[0\].role' must be 'assistant', got 'user'"),
    ({"prompt": PROMPT, "chosen": reply("4"), "rejected": reply("4")}, "field 'rejected' is identical"),
    ({"prompt": PROMPT, "completions": [reply("4"), 5], "ranking": [1, 2]},
     r"field 'completions\[1\]' must be a list of assistant messages"),
    ({"prompt": [{"role": "user", "content": 4}], "completion": reply("4"), "rating": 1},
     r"field 'prompt\[0\].content' must be a string"),
])
def test_bad_conversational_records_name_file_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [bad])
    with pytest.raises(UserError, match=f"^{re.escape(path)}:1: {message}"):
        load_preferences(path)
