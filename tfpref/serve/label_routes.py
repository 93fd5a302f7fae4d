"""The labelling page's API (`--label_input FILE --label_output FILE`).

    GET  /label/api/next?labeller=ID   {"item": the next item or null, "progress": {"done", "total"}}
    POST /label/api/submit             {"item_id", and "choice" | "order" | "rating"}
                                       -> {"saved": true, "duplicate": bool, "progress"}
    POST /label/api/skip               {"item_id", "labeller"}

"saved" is sent only after the label is appended and fsynced (tfpref.serve.journal). Items whose
completions are to be sampled (prompts alone) are sampled from the served model when first shown,
with a seed from the item's id, so a restarted server shows the same ones.
"""
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from tfpref.errors import UserError
from tfpref.serve.calls import call_blocking, conversation_inputs, sampling_inputs, strings
from tfpref.serve.errors import BadRequest
from tfpref.serve.web import JSONResponse, json_object, token_check

MAX_LABELLER_ID = 64


def sampler_for(model, settings):
    """item -> its completions, sampled from `model` (a VersionedModel) in one batched call."""
    def sample(item):
        scalars = sampling_inputs(settings.label_max_new_tokens, settings.label_temperature,
                                  seed=int(item.item_id[:7], 16))
        if isinstance(item.prompt, list):  # a conversation: the chat signature, once per completion row
            conversation = conversation_inputs(item.prompt)
            inputs = {name: value.repeat(item.count, axis=0) for name, value in conversation.items()}
            outputs = call_blocking(model, "chat", {**inputs, **scalars}, settings.queue_timeout_seconds)
        else:
            outputs = call_blocking(model, "generate", {"prompts": strings([item.prompt] * item.count), **scalars},
                                    settings.queue_timeout_seconds)
        return tuple(c.decode("utf-8", "replace") for c in outputs["completions"])
    return sample


def _labeller(value):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABELLER_ID:
        raise BadRequest(f"labeller must be a string of 1 to {MAX_LABELLER_ID} characters")
    return value


def label_router(queue, settings):
    """The labelling API over `queue` (a LabellingQueue), behind the token check."""
    router = APIRouter(prefix="/label/api", dependencies=[Depends(token_check(settings))])

    @router.get("/next")
    def next_item(labeller: str = "anonymous"):  # a plain def: sampling a new item blocks a worker thread
        try:
            item = queue.next_item(_labeller(labeller))
        except UserError as e:
            raise BadRequest(str(e)) from None
        return JSONResponse({"item": item, "progress": queue.progress()})

    @router.post("/submit")
    async def submit(request: Request):
        body = await json_object(request)
        answer = {key: body[key] for key in ("choice", "order", "rating") if key in body}
        try:
            # In a worker thread: the append waits for its fsync.
            return JSONResponse(await run_in_threadpool(queue.submit, body.get("item_id"), answer))
        except UserError as e:
            raise BadRequest(str(e)) from None

    @router.post("/skip")
    async def skip(request: Request):
        body = await json_object(request)
        try:
            return JSONResponse(queue.skip(_labeller(body.get("labeller")), body.get("item_id")))
        except UserError as e:
            raise BadRequest(str(e)) from None

    return router


__all__ = ["label_router", "sampler_for"]
