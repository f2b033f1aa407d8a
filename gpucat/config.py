"""TrainConfig: every knob of a training run in one frozen dataclass, checked when it is made;
the defaults are the reference recipe."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields

from gpucat.errors import GpucatError

REFERENCE_LAYERS = (12288, 20, 7, 5, 1)
SOLVERS = ("auto", "direct", "gram")  # training/solvers.py
OPTIMIZERS = ("gd", "momentum", "adam")  # optim.py
DTYPES = ("float32", "float64")
# settings that only observe a run: a resumed run may change them
OBSERVERS = ("iterations", "log_every", "full_cost")


def knob(kind: str, default, help: str, choices: tuple | None = None):
    """A TrainConfig field: its kind ("int", "float", "bool", "str" or "layers": whole
    numbers), default and help text; the CLI's flags are made from these, so that each is
    written once."""
    return field(default=default, metadata={"kind": kind, "help": help, "choices": choices})


def kind(f) -> str:
    """A knob's kind, as its field declares it."""
    return f.metadata["kind"]


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of one training run; the defaults are the reference recipe."""

    layers: tuple[int, ...] = knob("layers", REFERENCE_LAYERS, "layer sizes, e.g. 12288,20,7,5,1")
    learning_rate: float = knob("float", 0.0075, "the learning rate α")
    iterations: int = knob("int", 2500, "parameter updates, one per (mini-)batch")
    seed: int = knob("int", 1, "initial weights, shuffles, dropout masks, validation split")
    dtype: str = knob(
        "str",
        "float64",
        "floating-point type of the training arithmetic (float64 reproduces the published run "
        "exactly; float32 is faster for the direct solver, on consumer GPUs above all)",
        DTYPES,
    )
    log_every: int = knob("int", 100, "iterations between cost read-outs (observes only)")
    solver: str = knob(
        "str",
        "auto",
        "direct: the README's algorithm; gram: the same iterates through the M x M Gram matrix "
        "(fewer examples than inputs; not Adam); auto picks gram where it applies and pays",
        SOLVERS,
    )
    # beyond the original recipe (the defaults leave it unchanged)
    batch_size: int | None = knob(
        "int", None, "mini-batch size, reshuffled every epoch (default: full batch)"
    )
    optimizer: str = knob("str", "gd", "gradient descent, momentum or Adam", OPTIMIZERS)
    beta1: float = knob("float", 0.9, "momentum's beta, Adam's beta1")
    beta2: float = knob("float", 0.999, "Adam's beta2")
    epsilon: float = knob("float", 1e-8, "Adam's epsilon")
    lr_decay: float = knob("float", 0.0, "learning rate / (1 + decay * epoch)")
    l2: float = knob("float", 0.0, "L2 strength λ: the cost adds (λ/2M)·Σ‖W‖², each step (λ/M)·W")
    keep_prob: float = knob(
        "float", 1.0, "inverted dropout on hidden layers: probability to keep a unit"
    )
    flip: bool = knob("bool", False, "add left-right mirrored copies of the training images")
    validation: float = knob("float", 0.0, "fraction of the training set held out (stratified)")
    validate_every: int = knob(
        "int", 100, "validate at iterations i with i %% N == 0, and the final parameters"
    )
    patience: int | None = knob("int", None, "early stopping: validations without a better cost")
    full_cost: bool = knob(
        "bool", False, "log the whole training set's cost, not the batches' (a pass over the data)"
    )

    def __post_init__(self):
        """Every number made a plain Python int or float (a NumPy float64 learning rate would
        otherwise turn a float32 run's arrays into float64: NumPy 2 promotion), then every
        setting that cannot train refused: one GpucatError, when the config is made."""
        self._coerce()
        self._check()

    def _check(self) -> None:
        if self.seed < 0 or self.seed >= 2**32:
            raise GpucatError(f"--seed must be a whole number in 0 .. 2**32 - 1, got {self.seed}.")
        if len(self.layers) < 2 or any(n < 1 for n in self.layers):
            raise GpucatError(f"--layers needs at least two positive sizes, got {self.layers}.")
        if self.layers[-1] != 1:
            raise GpucatError(
                f"--layers must end in 1 (one cat probability), got {self.layers[-1]}."
            )
        positive = {"--learning-rate": self.learning_rate, "--epsilon": self.epsilon}
        for flag, v in positive.items():
            if not (v > 0 and math.isfinite(v)):
                raise GpucatError(f"{flag} must be a positive number, got {v}.")
        if self.iterations < 1:
            raise GpucatError(f"--iterations must be at least 1, got {self.iterations}.")
        for flag, v in (("--log-every", self.log_every), ("--validate-every", self.validate_every)):
            if v < 1:
                raise GpucatError(f"{flag} must be at least 1, got {v}.")
        for f in fields(self):  # --dtype, --solver, --optimizer: their knob's choices
            value, choices = getattr(self, f.name), f.metadata["choices"]
            if choices and value not in choices:
                flag = f"--{f.name.replace('_', '-')}"
                raise GpucatError(f"{flag} must be one of {', '.join(choices)}, got {value!r}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise GpucatError(f"--batch-size must be at least 1, got {self.batch_size}.")
        for flag, v in (("--beta1", self.beta1), ("--beta2", self.beta2)):
            if not 0 <= v < 1:
                raise GpucatError(f"{flag} must be in [0, 1), got {v}.")
        if self.lr_decay < 0 or self.l2 < 0:
            raise GpucatError("--lr-decay and --l2 must not be negative.")
        if not 0 < self.keep_prob <= 1:
            raise GpucatError(f"--keep-prob must be in (0, 1], got {self.keep_prob}.")
        if not 0 <= self.validation < 1:
            raise GpucatError(f"--validation must be a fraction in [0, 1), got {self.validation}.")
        if self.patience is not None and (self.patience < 1 or self.validation == 0):
            raise GpucatError(
                "--patience (early stopping) needs --validation > 0 and a value >= 1."
            )
        if self.solver == "gram":  # before any data is read
            self.require_gram()

    def gram_refusal(self) -> str | None:
        """Why the Gram solver (training/solvers.py) cannot run this recipe, or None when it can."""
        if len(self.layers) < 3:
            return "it needs at least one hidden layer"
        if self.optimizer == "adam":
            return "it runs gradient descent and momentum, not Adam"
        if self.validation:
            return "validation reads W1, which it forms only at the end"
        return None

    def require_gram(self) -> None:
        """The one message for a recipe the Gram solver cannot run."""
        why = self.gram_refusal()
        if why:
            raise GpucatError(f"--solver gram cannot run this recipe: {why}; use --solver direct.")

    def _coerce(self) -> None:
        def whole(name, v):
            if isinstance(v, bool) or not float(v).is_integer():
                raise GpucatError(f"--{name.replace('_', '-')} must be a whole number, got {v!r}.")
            return int(v)

        make = {
            "int": lambda name, v: whole(name, v),
            "float": lambda name, v: float(v),
            "bool": lambda name, v: bool(v),
            "str": lambda name, v: str(v),
            "layers": lambda name, v: tuple(whole(name, n) for n in v),
        }
        try:
            for f in fields(self):
                value = getattr(self, f.name)
                if value is not None:  # None: the knobs that may be unset (batch_size, ...)
                    object.__setattr__(self, f.name, make[kind(f)](f.name, value))
        except (TypeError, ValueError) as e:
            raise GpucatError(f"a training setting is not a number ({e}).") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> TrainConfig:
        """A copy with some knobs changed, checked as a new config is."""
        return dataclasses.replace(self, **changes)

    def is_log_point(self, i: int) -> bool:
        """Costs are read at every log_every-th iteration and at the last."""
        return i % self.log_every == 0 or i == self.iterations - 1
