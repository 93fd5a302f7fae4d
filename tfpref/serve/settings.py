"""What `tfpref serve` is asked to do: the models, the address, the token and the limits."""
import dataclasses
import os
import re

from tfpref.errors import UserError

# The A/B arms are served under these names too (/v1/models/a, /v1/models/b).
AB_MODEL_NAMES = ("a", "b")
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
    # The labelling page (/label): items from label_input, labels appended to label_output.
    label_input: str = ""
    label_output: str = ""
    label_task: str = "pair"          # for prompts alone: pair, rank (label_k completions) or rate
    label_k: int = 4
    rating_scale: int = 5
    label_max_new_tokens: int = 128   # sampled completions of prompts alone
    label_temperature: float = 1.0
    # The A/B test (/ab): two models served as "a" and "b", impressions and clicks in ab_log.
    ab: tuple = ()
    ab_log: str = ""
    ab_max_new_tokens: int = 32
    ab_temperature: float = 0.8
    ab_top_p: float = 0.95

    def served_models(self):
        """{name: directory} of every model to serve, model_dir's first."""
        served = {self.model_name: self.model_dir} if self.model_dir else {}
        served.update(self.models)
        served.update(zip(AB_MODEL_NAMES, self.ab))
        return served

    @property
    def chat_model(self):
        """The model the chat page and the labelling page sample from: model_dir's, else arm A's."""
        return self.model_name if self.model_dir else (AB_MODEL_NAMES[0] if self.ab else next(iter(self.models)))

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
        if bool(self.label_input) != bool(self.label_output):
            raise UserError("--label_input and --label_output go together: the items to label and the file of labels")
        if self.label_input and os.path.abspath(self.label_input) == os.path.abspath(self.label_output):
            raise UserError("--label_output must not be --label_input: labels are appended to it")
        if self.label_task not in ("pair", "rank", "rate"):
            raise UserError(f"--label_task must be pair, rank or rate, got {self.label_task!r}")
        if self.label_k < 2 or self.rating_scale < 2:
            raise UserError("--label_k and --rating_scale must be at least 2")
        if self.ab and len(self.ab) != 2:
            raise UserError(f"--ab takes two directories (A and B), got {len(self.ab)}")
        if bool(self.ab) != bool(self.ab_log):
            raise UserError("--ab and --ab_log go together: the two models and the file of impressions and clicks")
        for name in AB_MODEL_NAMES if self.ab else ():
            if name in self.models or (self.model_dir and name == self.model_name):
                raise UserError(f"--ab serves its models as '{name}': another model has that name")
        if not 0.0 <= self.ab_top_p <= 1.0 or self.ab_temperature < 0 or self.label_temperature < 0:
            raise UserError("--ab_top_p must be in [0, 1]; --ab_temperature and --label_temperature >= 0")
        for name in ("max_body_bytes", "max_new_tokens", "max_batch", "queue_size", "queue_timeout_seconds",
                     "poll_seconds", "label_max_new_tokens", "ab_max_new_tokens"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
