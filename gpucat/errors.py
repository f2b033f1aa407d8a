"""The one exception type meant for users: the CLI prints its message and exits with code 2."""


class GpucatError(Exception):
    """A problem the user can fix (bad file, missing GPU, diverged training); no traceback."""


class TrainingDiverged(GpucatError):
    """The cost became non-finite or grew far above its starting value."""


class DeadNetworkWarning(UserWarning):
    """Training ended with a hidden layer inactive for every training example, so the model
    gives every input the same probability (as scikit-learn's ConvergenceWarning, a warning
    about a fitted model that is not what its user wants)."""


DEAD_NETWORK_ADVICE = "try another seed (random_state / --seed) or a smaller learning rate"
