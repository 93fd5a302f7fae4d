"""Running the server process: the listening socket, the log, uvicorn.

The socket is bound before the models load, so a port in use is a one-line error at once, and it
listens before uvicorn starts, so a client that connects as soon as the address is printed waits in
the backlog instead of being refused. Ctrl-C or SIGTERM stop it gracefully (uvicorn): requests in
flight are answered, the batchers serve what is queued.
"""
import ipaddress
import logging
import socket
import sys

import uvicorn

from tfpref.errors import UserError
from tfpref.serve.app import build_app

log = logging.getLogger("tfpref.serve")


def _configure_log():
    """tfpref.serve's lines (versions loaded, internal errors with their tracebacks) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    return sock


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(settings):
    """Serve the models of `settings` (a ServeSettings) until interrupted.

    Example:
        >>> serve(ServeSettings(model_dir="logs/transformer-conditional", port=8501))
    """
    settings.validate()
    _configure_log()
    sock = _bind(settings.host, settings.port)
    try:
        app = build_app(settings)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    if not settings.token and not _is_loopback(settings.host):
        log.warning("serving on %s without --token: anyone who can reach this port can use the models", host)
    url_host = f"[{host}]" if ":" in host else host
    for name, model in app.state.models.items():
        print(f"Serving {name} version {model.current.version} ({model.base}) at "
              f"http://{url_host}:{port}/v1/models/{name}", flush=True)
    # uvicorn logs each request at INFO: the access log needs that level, else warnings are enough.
    config = uvicorn.Config(app, log_level="info" if settings.access_log else "warning", access_log=settings.access_log,
                            lifespan="on")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if server.started and server.should_exit:
        # Ctrl-C or SIGTERM, after a graceful shutdown. uvicorn re-raises the signal itself, but that
        # races with asyncio's own SIGINT handling (the process may exit 0 or 130): say it here.
        raise KeyboardInterrupt
