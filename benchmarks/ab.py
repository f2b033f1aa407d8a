#!/usr/bin/env python3
"""The reference recipe's ms per iteration (training time alone, after a warm-up as long as
the timed run) with the code of an older tree (--old) against this one: whole processes,
old and new alternating, each pair's ratio new / old; medians. Each side runs through the
public API (gpucat.train_model), which older trees share.

    python benchmarks/ab.py --old DIR [--solvers direct] [--rounds 7] [--out F.json]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from _common import ROOT, finish, parser, restart_unpinned, unpinned_env

CHILD = """
import json, sys
import gpucat
solver, dtype, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
recipe = dict(device="cpu", iterations=iterations, dtype=dtype, solver=solver)
gpucat.train_model(**recipe)  # warm-up: threads, caches and clocks settle first
r = gpucat.train_model(**recipe).metadata["result"]
print(json.dumps({"ms": r["ms_per_iteration"], "solver": r["solver"], "gpucat": gpucat.__file__}))
"""


def one(tree: str, solver: str, dtype: str, iterations: int) -> float:
    """ms per iteration of one whole process running the tree's code."""
    env = {**unpinned_env(), "PYTHONPATH": tree}
    cmd = [sys.executable, "-c", CHILD, solver, dtype, str(iterations)]
    # cwd: the tree itself (python -c puts the folder it starts in first on the path)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=tree)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["gpucat"].startswith(tree) and doc["solver"] == solver, doc
    return doc["ms"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--old", required=True, metavar="DIR", help="the root of the older tree")
    p.add_argument("--solvers", nargs="+", default=["direct", "gram"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    restart_unpinned()
    trees = {"old": str(Path(args.old).resolve()), "new": str(ROOT)}
    rows = []
    for solver in args.solvers:
        for dtype in args.dtypes:
            ms: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for side, tree in trees.items():
                    ms[side].append(one(tree, solver, dtype, args.iterations))
            ratios = [n / o for n, o in zip(ms["new"], ms["old"])]
            row = {
                "solver": solver,
                "dtype": dtype,
                "old_ms": statistics.median(ms["old"]),
                "new_ms": statistics.median(ms["new"]),
                "new_over_old": statistics.median(ratios),
                "ratios": ratios,
                "rounds": ms,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    finish({"iterations": args.iterations, "old": args.old, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
