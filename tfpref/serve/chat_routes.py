"""The chat page's API: a conversation in, the model's reply streamed out as it is generated.

    GET  /api/info    the chat model's name, version, whether it has the chat template, and its
                      conditioning: "none", "control_tokens" or "preference_vector"
    POST /api/chat    {"messages": [{"role", "content"}, ...], "max_new_tokens", "temperature",
                      "top_k", "top_p", "seed", "preference"} -> JSON lines: {"text": piece} ...,
                      then {"done": true, "finished": bool, "num_tokens": n}, or {"error": "..."}

"preference" (optional, for a controllable model) is what this turn's reply is asked for:
{"aligned": true or false} (control tokens) or {"score": x, "length": y} (a preference vector).
With one the reply comes from the export's `chat_with_preference` (`generate_with_preference`
without the chat template); without one, from `chat`, which asks for aligned text.

The reply is generated CHUNK_TOKENS tokens a call: each call continues the assistant's message so
far (the export's chat signature continues a conversation that ends with the assistant's message),
and its text is sent at once. A greedy reply is the same token for token as one made in one call.
A model without the chat template (a keras-hub preset without added markers) completes the last
user message as plain text with `generate`. The bytes of a character split between two calls are
held back until it is whole.
"""
import codecs
import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tfpref.serve.calls import call, conversation_inputs, sampling_inputs, strings
from tfpref.serve.errors import BadRequest
from tfpref.serve.preferences import conditioning, parse_preference, preference_inputs
from tfpref.serve.web import JSONResponse, json_object, token_check

CHUNK_TOKENS = 16
ROLES = ("system", "user", "assistant")


def _number(body, name, default, kind, low=None, high=None):
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"{name} must be in [{low}, {high}], got {value}")
    return kind(value)


def parse_chat_request(body, settings):
    """(messages, sampling settings) of a /api/chat body; BadRequest names what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {\"role\", \"content\"}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or \
                not isinstance(message.get("content"), str):
            raise BadRequest(f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, \"content\": a string}}")
    if messages[-1]["role"] != "user":
        raise BadRequest("the last message must be the user's")
    default_new = min(128, settings.max_new_tokens)
    sampling = {"max_new_tokens": _number(body, "max_new_tokens", default_new, int, 1, settings.max_new_tokens),
                "temperature": _number(body, "temperature", 0.8, float, 0.0, 100.0),
                "top_k": _number(body, "top_k", 0, int, 0, 1 << 20),
                "top_p": _number(body, "top_p", 1.0, float, 0.0, 1.0),
                "seed": _number(body, "seed", 0, int, -(1 << 31), (1 << 31) - 1)}
    return messages, sampling


class ReplyStream:
    """One reply, generated a chunk a call: `step()` returns the next piece of text (or None when
    the reply has ended). `preference` (`parse_preference`'s, or None) is what the reply asks for."""

    def __init__(self, model, messages, sampling, timeout_seconds, preference=None):
        self.model, self.messages, self.sampling, self.timeout = model, messages, sampling, timeout_seconds
        self.preference = preference
        self.reply, self.num_tokens, self.finished, self.calls = b"", 0, False, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def uses_chat(self):
        return "chat" in self.model.current.signatures

    def _inputs(self, new_tokens):
        # Each call draws fresh noise: the seed moves on with the calls (a prime stride keeps the
        # streams of nearby seeds apart).
        scalars = sampling_inputs(new_tokens, self.sampling["temperature"], self.sampling["top_k"],
                                  self.sampling["top_p"], (self.sampling["seed"] + 7919 * self.calls) % (1 << 31))
        if self.uses_chat:
            signature, inputs = "chat", {**conversation_inputs(self.messages, self.reply), **scalars}
        else:
            signature = "generate"
            inputs = {"prompts": strings([self.messages[-1]["content"].encode("utf-8") + self.reply]), **scalars}
        if self.preference is None:
            return signature, inputs
        return f"{signature}_with_preference", {**inputs, **preference_inputs(self.preference)}

    async def step(self):
        left = self.sampling["max_new_tokens"] - self.num_tokens
        if self.finished or left <= 0:
            return None
        signature, inputs = self._inputs(min(CHUNK_TOKENS, left))
        outputs = await call(self.model, signature, inputs, self.timeout)
        piece, made = outputs["completions"][0], int(outputs["num_tokens"][0])
        self.calls += 1
        self.reply += piece
        self.num_tokens += made
        self.finished = bool(outputs["finished"][0]) or made == 0
        return self.decoder.decode(piece)

    def rest(self):
        return self.decoder.decode(b"", final=True)


def chat_router(model, settings):
    """The chat API over `model` (a VersionedModel), behind the token check."""
    router = APIRouter(dependencies=[Depends(token_check(settings))])

    @router.get("/api/info")
    def info():
        servable = model.current
        return JSONResponse({"model": model.name, "version": servable.version, "chat": "chat" in servable.signatures,
                             "conditioning": conditioning(servable.inputs)})

    @router.post("/api/chat")
    async def chat(request: Request):
        body = await json_object(request)
        messages, sampling = parse_chat_request(body, settings)
        preference = parse_preference(body.get("preference"), conditioning(model.current.inputs))
        stream = ReplyStream(model, messages, sampling, settings.queue_timeout_seconds, preference)
        first = await stream.step()  # before the response starts: a bad request still gets its 4xx

        async def lines():
            piece = first
            try:
                while piece is not None:
                    if piece:
                        yield json.dumps({"text": piece}, ensure_ascii=False) + "\n"
                    if await request.is_disconnected():
                        return
                    piece = await stream.step()
            except Exception as e:  # noqa: BLE001 - the status is sent: the error goes in the stream
                yield json.dumps({"error": str(e).splitlines()[0] if str(e) else type(e).__name__}) + "\n"
                return
            tail = stream.rest()
            if tail:
                yield json.dumps({"text": tail}, ensure_ascii=False) + "\n"
            yield json.dumps({"done": True, "finished": stream.finished, "num_tokens": stream.num_tokens}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return router


__all__ = ["chat_router", "parse_chat_request", "ReplyStream", "CHUNK_TOKENS"]
