"""The one exception type meant for users: the CLI prints its message and exits with code 2."""


class GpucatError(Exception):
    """A problem the user can fix (bad file, missing GPU, diverged training); no traceback."""


class TrainingDiverged(GpucatError):
    """The cost became non-finite or grew far above its starting value."""
