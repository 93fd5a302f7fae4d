"""The server's errors: each is one HTTP status and one line for the client ({"error": "..."})."""


class ServeError(Exception):
    """A request the server refuses; `status` is its HTTP status code."""
    status = 500
    headers = None


class BadRequest(ServeError):
    """Malformed JSON, missing or unknown inputs, values over a limit, or the model's own
    INVALID_ARGUMENT (an empty text, a prompt too long for the model)."""
    status = 400


class Unauthorized(ServeError):
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class NotFound(ServeError):
    """An unknown model, version, signature or endpoint."""
    status = 404


class TooLarge(ServeError):
    status = 413


class Overloaded(ServeError):
    """The model's queue is full, or a request waited longer than the queue timeout: try again later."""
    status = 503
    headers = {"Retry-After": "1"}


class Retired(Exception):
    """Submitted to a model version that has just been replaced: the caller resubmits to the new one.
    Never reaches a client."""
