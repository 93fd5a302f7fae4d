"""The HTTP server: `tfpref serve --model_dir RUN` (or `python -m tfpref.serve`) serves a run's
exported SavedModel over TensorFlow Serving's REST API, for people in the loop (chat, labelling and
A/B pages are to be added as routers of app.py).

    settings.py   ServeSettings: models, address, token, limits
    versions.py   the version policy "latest": load the highest export version, swap in newer ones
    servable.py   one loaded version: its signatures, their metadata, its batcher
    batching.py   concurrent requests to a model run as one call of its signature
    codec.py      TensorFlow Serving's JSON (row and columnar formats) to NumPy inputs and back
    rest.py       the REST routes: model status, metadata, predict
    web.py        what every router shares: JSON errors, the body limit, the token check
    errors.py     the errors a client can get, each an HTTP status
    app.py        build_app(settings): the FastAPI app
    server.py     serve(settings): the socket, the log and uvicorn

Importing this package imports nothing else (the `tfpref` command decides first how quietly
TensorFlow starts): import the module you need.
"""
