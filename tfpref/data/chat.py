"""The chat template: the one definition of how a conversation becomes token ids.

Conversations come in TRL's conversational form, a list of {"role", "content"} messages with
roles "system", "user" and "assistant". Each message is its role marker, the content's tokens and
an end-of-turn marker; the markers are control tokens of the model's tokenizer (its `control_tokens`),
which no text encodes to, so no text can forge them. The byte tokenizer has them at fixed ids
(tfpref.data.tokenizer.CONTROL_TOKENS); a keras-hub preset's vocabulary gets them appended
(tfpref.data.tokenizers.KerasHubTokenizer):

    bytes:   <|system|> = 7   <|user|> = 8   <|assistant|> = 9   <|end|> = 10

    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
      -> <|system|> B e _ b r i e f . <|end|> <|user|> H i <|end|>
    ... with add_generation_prompt=True (a prompt for the model to complete):
      -> <|system|> B e _ b r i e f . <|end|> <|user|> H i <|end|> <|assistant|>
    the assistant's completion continues it:
      -> H e l l o ! <|end|>

A sequence the model sees is BOS followed by these ids, as for plain text. `<|end|>` is the
assistant's end of turn: SFT trains on it (`conversation_ids` marks each assistant message's content
and `<|end|>`, not the `<|assistant|>` marker, which belongs to the prompt), and generation from a
chat prompt stops on it. The role markers stay banned when sampling, so the model never writes a
user's turn itself (`chat_generation` gives the stop id and the bans).

Training (SFT, conversational preference records), sampling and evaluation render through
`render`. An exported language model's `chat` signature builds the same ids in its graph from
[batch, messages] roles and contents (tfpref.training.export; a test holds the two equal): its
`generate` takes byte strings, which cannot carry the markers. A chat server renders with this
module or calls that signature.

Example:
    >>> messages = [{"role": "user", "content": "add 2:"}, {"role": "assistant", "content": "4"}]
    >>> ids, assistant_mask = conversation_ids(messages)
    >>> render(messages[:1], add_generation_prompt=True)   # [8, 113, ..., 10, 9]
"""
import numpy as np

from tfpref.data.tokenizer import ByteTokenizer
from tfpref.errors import UserError, location

ROLES = ("system", "user", "assistant")


def role_ids(tokenizer=None):
    """{role: id of its marker} in `tokenizer`'s vocabulary (default: bytes)."""
    tokens = (tokenizer or ByteTokenizer()).control_tokens
    return {role: tokens[f"<|{role}|>"] for role in ROLES}


def end_id(tokenizer=None):
    """The id of `<|end|>`, the end of a turn, in `tokenizer`'s vocabulary (default: bytes)."""
    return (tokenizer or ByteTokenizer()).control_tokens["<|end|>"]


def is_conversation(value):
    """True when a record's field holds messages (a list) rather than text (a string)."""
    return isinstance(value, (list, tuple))


def parse_messages(value, path, number, field, roles=ROLES):
    """A validated conversation as a tuple of (role, content) pairs (hashable, for frozen records).

    Args:
        value: the field's JSON value, a list of {"role", "content"} objects.
        path, number, field: the file, line and field, named by the error of a bad message.
        roles: the roles allowed here (("assistant",) for a completion).
    Raises:
        UserError: one line such as `data.jsonl:3: field 'prompt[1].role' must be one of system,
            user, assistant, got 'bot'`.
    """
    if not isinstance(value, list):
        raise UserError(f"{location(path, number, field)} must be a list of {{'role', 'content'}} messages, "
                        f"got {type(value).__name__}")
    if not value:
        raise UserError(f"{location(path, number, field)} is an empty list of messages")
    pairs = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise UserError(f"{location(path, number, where)} must be an object with 'role' and 'content', "
                            f"got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise UserError(f"{location(path, number, f'{where}.{key}')} is missing")
        if message["role"] not in roles:
            raise UserError(f"{location(path, number, f'{where}.role')} must be {_one_of(roles)}, "
                            f"got {message['role']!r}")
        if not isinstance(message["content"], str):
            raise UserError(f"{location(path, number, f'{where}.content')} must be a string, "
                            f"got {type(message['content']).__name__}")
        pairs.append((message["role"], message["content"]))
    return tuple(pairs)


def _one_of(roles):
    return f"'{roles[0]}'" if len(roles) == 1 else f"one of {', '.join(roles)}"


def _pairs(messages):
    """(role, content) pairs of messages given as dicts (TRL's form) or as pairs already."""
    return [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]


def to_dicts(messages):
    """TRL's form, [{"role", "content"}], of messages given either way (for JSON output)."""
    return [{"role": role, "content": content} for role, content in _pairs(messages)]


def conversation_ids(messages, tokenizer=None):
    """(ids int32 [n], assistant_mask bool [n]) of a conversation rendered by the template.

    The mask marks what SFT trains on: the content and `<|end|>` of every assistant message.

    Args:
        messages: [{"role", "content"}] or (role, content) pairs, roles from ROLES.
        tokenizer: the model's tokenizer (default: bytes), whose control tokens are the markers.
    """
    tokenizer = tokenizer or ByteTokenizer()
    roles, end = role_ids(tokenizer), end_id(tokenizer)
    parts, masks = [], []
    for role, content in _pairs(messages):
        body = np.concatenate([tokenizer.encode(content), [end]])
        parts += [[roles[role]], body]
        masks += [[False], np.full(len(body), role == "assistant")]
    if not parts:
        return np.zeros([0], np.int32), np.zeros([0], bool)
    return np.concatenate(parts).astype(np.int32), np.concatenate(masks).astype(bool)


def render(messages, add_generation_prompt=False, tokenizer=None):
    """int32 ids of `messages` by the template (no BOS); `add_generation_prompt` appends `<|assistant|>`,
    making a prompt for the model to complete.

    Example:
        >>> render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        array([  8,  88, 121,  10,   9], dtype=int32)
    """
    ids = conversation_ids(messages, tokenizer)[0]
    return np.append(ids, role_ids(tokenizer)["assistant"]).astype(np.int32) if add_generation_prompt else ids


def render_completion(messages, tokenizer=None):
    """int32 ids of assistant `messages` continuing a prompt rendered with the generation prompt:
    the first message's content and `<|end|>` (its marker ends the prompt), then any further
    messages whole."""
    if _pairs(messages)[0][0] != "assistant":
        raise ValueError("a completion starts with an assistant message")
    return render(messages, tokenizer=tokenizer)[1:]


def render_text(messages, add_generation_prompt=False):
    """The template as readable text, markers spelled out: for logs and samples files only (the
    model reads the marker ids, which this text cannot carry)."""
    text = "".join(f"<|{role}|>{content}<|end|>" for role, content in _pairs(messages))
    return text + "<|assistant|>" if add_generation_prompt else text


def messages_from_ids(ids, tokenizer=None):
    """The messages a rendered conversation holds ((role, content) pairs), from its ids (BOS and a
    trailing generation prompt are skipped): `render`'s inverse, for what a rollout's prompt was."""
    tokenizer = tokenizer or ByteTokenizer()
    roles_of, end = {i: role for role, i in role_ids(tokenizer).items()}, end_id(tokenizer)
    messages, role, content = [], None, []
    for i in np.asarray(ids).tolist():
        if i in roles_of:
            role, content = roles_of[i], []
        elif i == end and role is not None:
            messages.append((role, tokenizer.decode(np.array(content, np.int32))))
            role = None
        elif role is not None:
            content.append(i)
    return tuple(messages)


def split_key(prompt):
    """The text a prompt's train/validation/test split is decided by: the prompt itself, or a
    conversation's first user message (so a plain and a conversational record asking the same thing
    land in the same split, and every continuation of a conversation goes with its opening)."""
    if not is_conversation(prompt):
        return prompt
    pairs = _pairs(prompt)
    return next((content for role, content in pairs if role == "user"), "".join(c for _, c in pairs))


def chat_generation(banned_ids, tokenizer=None):
    """(eos_id, banned_ids) for sampling a reply to a chat prompt, from a model's usual bans:
    stop on `<|end|>` (now allowed), and ban EOS (a reply ends its turn, not the document).
    `tokenizer`: the model's (default: bytes).

    Example:
        >>> eos_id, banned = chat_generation(model.banned_ids(True), tokenizer)
        >>> sampler = Sampler(model, 64, banned_ids=banned, eos_id=eos_id)
    """
    tokenizer = tokenizer or ByteTokenizer()
    end = end_id(tokenizer)
    banned = [i for i in banned_ids if i != end]
    return end, tuple(sorted(set(banned) | {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}))


__all__ = ["ROLES", "role_ids", "end_id", "is_conversation", "parse_messages", "to_dicts",
           "conversation_ids", "render", "render_completion", "render_text", "messages_from_ids", "split_key",
           "chat_generation"]
