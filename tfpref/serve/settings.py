"""What `tfpref serve` is asked to do: the models, the address, the token and the limits."""
import dataclasses
import re

from tfpref.errors import UserError

# A model name is part of the URL (/v1/models/NAME:predict): no slash, colon or space.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass
class ServeSettings:
    """The server's settings; `validate()` names the flag of a bad value.

    Example:
        >>> settings = ServeSettings(model_dir="logs/transformer-conditional", port=8080)
        >>> settings.validate()
        >>> settings.served_models()
        {'tfpref': 'logs/transformer-conditional'}
    """
    model_dir: str = ""               # a run directory (its export/) or an export base (numeric version dirs)
    model_name: str = "tfpref"        # the name model_dir is served under
    models: dict = dataclasses.field(default_factory=dict)  # further models, name -> directory (--model)
    host: str = "127.0.0.1"           # loopback: reachable from this machine only unless asked
    port: int = 8501                  # TensorFlow Serving's REST port; 0 picks a free one
    token: str = ""                   # when set, every API request needs "Authorization: Bearer <token>"
    max_body_bytes: int = 1 << 20     # a longer request body is refused (413) before it is read
    max_new_tokens: int = 512         # the largest max_new_tokens a request may ask for
    max_batch: int = 64               # rows one request may send, and rows one batched model call runs
    queue_size: int = 256             # requests waiting per model before new ones are refused (503)
    queue_timeout_seconds: float = 30.0  # a request not started within this long is refused (503)
    poll_seconds: float = 2.0         # how often the export directories are checked for a new version
    reproducible_sampling: bool = False  # sampled requests run alone, so a seed always gives the same text
    access_log: bool = False          # one log line per request (uvicorn's access log)

    def served_models(self):
        """{name: directory} of every model to serve, model_dir's first."""
        served = {self.model_name: self.model_dir} if self.model_dir else {}
        served.update(self.models)
        return served

    def validate(self):
        if not self.served_models():
            raise UserError("--model_dir: required (a run directory, or an export base of numeric version dirs)")
        if not MODEL_NAME.fullmatch(self.model_name):
            raise UserError(f"--model_name: '{self.model_name}' is not a URL-safe name (letters, digits, _ . -)")
        for name, directory in self.models.items():
            if not MODEL_NAME.fullmatch(name):
                raise UserError(f"--model {name}={directory}: '{name}' is not a URL-safe name (letters, digits, _ . -)")
            if name == self.model_name and self.model_dir:
                raise UserError(f"--model {name}={directory}: '{name}' is already --model_name's")
            if not directory:
                raise UserError(f"--model {name}=: empty directory")
        if not self.host:
            raise UserError("--host: must not be empty")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be in 0..65535, got {self.port}")
        for name in ("max_body_bytes", "max_new_tokens", "max_batch", "queue_size", "queue_timeout_seconds",
                     "poll_seconds"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
