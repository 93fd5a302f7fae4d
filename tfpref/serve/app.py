"""The server's FastAPI app: the shared error handling (web.py) and one router per feature."""
import contextlib

from fastapi import FastAPI

from tfpref.serve import web
from tfpref.serve.rest import rest_router
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
    # Routers added later, one include each: the chat page (/), labelling (/label), A/B comparisons.
    return app
