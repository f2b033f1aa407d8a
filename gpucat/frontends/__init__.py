"""What people drive gpucat with besides the command line (cli/): the Python API (api.py),
the scikit-learn estimator (estimator.py), comparing devices (compare.py, sweep.py), a run's
report (report.py), `gpucat info` (info.py) and pictures (plots.py)."""
