"""The server's FastAPI app: the shared error handling (web.py) and one router per feature."""
import contextlib

from fastapi import FastAPI

from tfpref.serve import web
from tfpref.serve.ab_routes import ab_router
from tfpref.serve.chat_routes import chat_router
from tfpref.serve.click_log import ClickLog
from tfpref.serve.journal import Journal
from tfpref.serve.label_items import read_items
from tfpref.serve.label_routes import label_router, sampler_for
from tfpref.serve.labelling import LabellingQueue
from tfpref.serve.pages import SecurityHeaders, page_router, static_files
from tfpref.serve.rest import rest_router
from tfpref.serve.settings import AB_MODEL_NAMES
from tfpref.serve.versions import load_models


def build_app(settings):
    """A FastAPI app serving the models of `settings` (validated here; each loaded at its latest
    version, so a missing export is a UserError now, not at the first request). Polling for new
    versions runs while the app does (its lifespan); stopping it serves what is queued.

    Example:
        >>> app = build_app(ServeSettings(model_dir="logs/transformer-conditional"))
        >>> uvicorn.run(app, port=8501)
    """
    settings.validate()
    # The input files first: a bad one is a one-line error before any model is loaded.
    items = read_items(settings.label_input, settings.label_task, settings.label_k) if settings.label_input else None
    labels = Journal(settings.label_output, key_field="item_id") if items else None
    clicks = ClickLog(settings.ab_log) if settings.ab else None
    models = load_models(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for model in models.values():
            model.start_polling()
        try:
            yield
        finally:
            for model in models.values():
                model.stop()

    # No /docs page: it would load its scripts from a CDN, and the API is TensorFlow Serving's, documented there.
    app = FastAPI(title="tfpref", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models, app.state.settings = models, settings
    web.install(app, settings)

    @app.get("/healthz")  # for load balancers and people: no token, nothing private
    def health():
        return web.JSONResponse({"status": "ok", "models": {
            name: {"version": model.current.version, "requests_served": model.current.batcher.requests_served,
                   "model_calls": model.current.batcher.calls} for name, model in models.items()}})

    app.include_router(rest_router(models, settings))
    chat_model = models[settings.chat_model]
    app.include_router(chat_router(chat_model, settings))
    if items:
        queue = LabellingQueue(items, labels, sample=sampler_for(chat_model, settings), scale=settings.rating_scale)
        app.include_router(label_router(queue, settings))
    if clicks:
        app.include_router(ab_router(dict(zip(("A", "B"), (models[name] for name in AB_MODEL_NAMES))), clicks,
                                     settings))
    app.include_router(page_router(labelling=bool(items), ab=bool(clicks)))
    app.mount("/static", static_files(), name="static")
    app.add_middleware(SecurityHeaders)
    return app
