"""The A/B test's API (`--ab DIR_A DIR_B --ab_log FILE`): two policies, visitors, clicks.

    POST /ab/api/impression  {"prompt"} -> {"impression_id", "completion"}: the completion of one of
                             the two models, drawn at random per request (the visitor is not told which)
    POST /ab/api/click       {"impression_id"} -> {"clicked": true, "duplicate": bool}
    GET  /ab/report.json     each arm's impressions, clicks, click-through rate and its 95% Wilson
                             interval, the models, and the two-proportion test's p-value

Impressions and clicks are fsynced before the visitor is answered and written in tfpref's clicks
format (tfpref.serve.click_log), ready for `train.py --objective reward_model --data FILE`.
"""
import secrets

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from tfpref.errors import UserError
from tfpref.serve.ab_stats import ab_report
from tfpref.serve.calls import call, sampling_inputs, strings
from tfpref.serve.click_log import ARMS
from tfpref.serve.errors import BadRequest
from tfpref.serve.web import JSONResponse, json_object, token_check


def ab_router(arms, log, settings):
    """The A/B API: `arms` {"A": VersionedModel, "B": ...}, `log` a ClickLog."""
    router = APIRouter(prefix="/ab", dependencies=[Depends(token_check(settings))])

    @router.post("/api/impression")
    async def impression(request: Request):
        body = await json_object(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        arm = ARMS[secrets.randbelow(len(ARMS))]
        inputs = {"prompts": strings([prompt]), **sampling_inputs(
            settings.ab_max_new_tokens, settings.ab_temperature, top_p=settings.ab_top_p,
            seed=secrets.randbelow(1 << 31))}
        outputs = await call(arms[arm], "generate", inputs, settings.queue_timeout_seconds)
        completion = outputs["completions"][0].decode("utf-8", "replace")
        model = f"{arms[arm].name} version {arms[arm].current.version}"
        impression_id = await run_in_threadpool(log.impression, arm, prompt, completion, model)
        return JSONResponse({"impression_id": impression_id, "completion": completion})

    @router.post("/api/click")
    async def click(request: Request):
        body = await json_object(request)
        try:
            written = await run_in_threadpool(log.click, body.get("impression_id"))
        except UserError as e:
            raise BadRequest(str(e)) from None
        return JSONResponse({"clicked": True, "duplicate": not written})

    @router.get("/report.json")
    def report():
        result = ab_report(log.counts())
        for arm, stats in result["arms"].items():
            stats["model"] = f"{arms[arm].name} version {arms[arm].current.version}"
        return JSONResponse(result)

    return router


__all__ = ["ab_router"]
