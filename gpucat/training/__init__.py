"""Training: the one loop (loop.py) and its seams, the solver (solvers.py: which algorithm
computes an iteration) and the reducer (reducers.py, distributed.py: how sums cross
processes); checkpoints (checkpoint.py)."""
