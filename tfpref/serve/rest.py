"""TensorFlow Serving's REST API, for tfpref's exports (and other SavedModels with named signatures).

    GET  /v1/models/NAME[/versions/N]            the served version: {"model_version_status": [...]}
    GET  /v1/models/NAME[/versions/N]/metadata   its signatures' inputs and outputs (signature_def)
    POST /v1/models/NAME[/versions/N]:predict    run a signature, row or columnar format (codec.py)

The request bodies and answers are TensorFlow Serving's, so its clients work unchanged. The version
policy is "latest" (versions.py): the served version is the only one available, and asking for
another is 404 naming it. "signature_name" defaults to "serving_default", which for a tfpref export
means its main signature (generate, reward or classify: servable.py). A request sends at most
--max_batch rows and asks for at most --max_new_tokens new tokens (400 beyond). No file path is
taken from a request: models are the ones the server was started with.

Example:
    curl -d '{"inputs": {"prompts": ["def parse("], "max_new_tokens": 64, "temperature": 0.8, "top_k": 0,
              "top_p": 0.95, "seed": 0}}' localhost:8501/v1/models/tfpref:predict
"""
from fastapi import APIRouter, Depends, Request

from tfpref.serve import codec
from tfpref.serve.batching import finished
from tfpref.serve.errors import BadRequest, NotFound, Retired
from tfpref.serve.web import JSONResponse, token_check


def rest_router(models, settings):
    """The API's routes over `models` ({name: VersionedModel}), behind the token check."""
    router = APIRouter(prefix="/v1/models", dependencies=[Depends(token_check(settings))])

    # "{name}" matches "NAME:predict" too: the predict routes are POST only, the others GET only.
    @router.post("/{name}:predict")
    async def predict(name: str, request: Request):
        return await _predict(models, settings, name, None, request)

    @router.post("/{name}/versions/{version}:predict")
    async def predict_version(name: str, version: str, request: Request):
        return await _predict(models, settings, name, version, request)

    @router.get("/{name}/metadata")
    def metadata(name: str):
        return JSONResponse(_metadata(_servable(models, name, None)))

    @router.get("/{name}/versions/{version}/metadata")
    def metadata_version(name: str, version: str):
        return JSONResponse(_metadata(_servable(models, name, version)))

    @router.get("/{name}")
    def status(name: str):
        return JSONResponse(_status(_servable(models, name, None)))

    @router.get("/{name}/versions/{version}")
    def status_version(name: str, version: str):
        return JSONResponse(_status(_servable(models, name, version)))

    return router


def _servable(models, name, version):
    """The served version of model `name`; NotFound for another model or version."""
    if name not in models:
        raise NotFound(f"unknown model '{name}' (this server serves {', '.join(sorted(models))})")
    servable = models[name].current
    if version is not None and version != str(servable.version):
        raise NotFound(f"model {name} has no version '{version}' available: the version policy is latest, "
                       f"version {servable.version} is served")
    return servable


def _status(servable):
    return {"model_version_status": [{"version": str(servable.version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def _metadata(servable):
    return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                                           "signature_def": servable.signature_defs}}}


def _check_limits(inputs, settings):
    rows = max((value.shape[0] for value in inputs.values() if value.ndim), default=0)
    if rows > settings.max_batch:
        raise BadRequest(f"{rows} rows in one request: this server takes at most {settings.max_batch} "
                         f"(--max_batch); split the request")
    new_tokens = inputs.get("max_new_tokens")
    if new_tokens is not None and new_tokens.ndim == 0 and new_tokens > settings.max_new_tokens:
        raise BadRequest(f"max_new_tokens {int(new_tokens)} is over this server's limit of {settings.max_new_tokens} "
                         f"(--max_new_tokens)")


async def _predict(models, settings, name, version, request):
    payload = codec.parse_body(await request.body())
    while True:
        servable = _servable(models, name, version)
        signature = servable.signature(payload.get("signature_name"))
        inputs, row_format = codec.request_inputs(payload, servable.inputs[signature], signature)
        _check_limits(inputs, settings)
        try:
            future = servable.batcher.submit(signature, inputs)
        except Retired:  # a newer version was swapped in just now: ask again (a pinned version is then 404)
            continue
        outputs = await finished(future, settings.queue_timeout_seconds)
        return JSONResponse(codec.response(outputs, row_format))
