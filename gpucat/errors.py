"""The one exception type meant for users: the CLI prints its message and exits with code 2."""


def first_line(e: BaseException, with_type: bool = False) -> str:
    """What an exception says, in one line for a message: its first line (after its type's
    name with ``with_type``), or its type's name when it says nothing."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]


class GpucatError(Exception):
    """A problem the user can fix (bad file, missing GPU, diverged training); no traceback."""


class TrainingDiverged(GpucatError):
    """The cost became non-finite or grew far above its starting value."""


class DeadNetworkWarning(UserWarning):
    """Training ended with a hidden layer inactive for every training example, so the model
    gives every input the same probability (as scikit-learn's ConvergenceWarning, a warning
    about a fitted model that is not what its user wants)."""


DEAD_NETWORK_ADVICE = "try another seed (random_state / --seed) or a smaller learning rate"
