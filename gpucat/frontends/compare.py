"""Comparing devices: the same recipe from the same initial parameters on every usable
device (NumPy always, CuPy where a GPU answers) and dtype, each run's costs measured against
NumPy's in the same dtype (float32 and float64 runs part ways by rounding, devices should
not)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

from gpucat.config import TrainConfig

RECIPE = TrainConfig()  # the reference recipe: compare's defaults are its knobs

COLUMNS = (
    "device",
    "backend",
    "dtype",
    "solver",
    "ms_per_iteration",
    "seconds",
    "final_cost",
    "train_accuracy",
    "test_accuracy",
)
BOTH = ("float64", "float32")  # float64 first: the published run leads the table
KEPT = (*COLUMNS, "max_cost_deviation", "costs", "train_correct", "test_correct")


def compare(
    iterations: int = RECIPE.iterations,
    dtypes: Sequence[str] = BOTH,
    solver: str = RECIPE.solver,
    log_every: int = RECIPE.log_every,
    data_dir: str | os.PathLike | None = None,
    devices: Sequence | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Train the reference recipe (``iterations``, ``solver``; costs logged every
    ``log_every``) on the course data, once per device (default: every usable one) and dtype.
    Returns ``{"rows": [...], "max_cost_deviation": ..., "reference": ...}``, one row per run;
    ``on_row(result)`` is called after each run with the result so far."""
    from gpucat.backends import available_devices
    from gpucat.data.course import load_course_data
    from gpucat.frontends.report import run_recipe

    train_set, test_set = load_course_data(data_dir)
    configs = [
        TrainConfig(iterations=iterations, dtype=d, solver=solver, log_every=log_every)
        for d in dtypes
    ]
    rows: list[dict] = []
    result = with_deviations(rows)
    for config in configs:  # NumPy first in each dtype: the reference of the rows after it
        for device in devices or available_devices():
            _, summary = run_recipe(device, config, train_set, test_set)
            rows.append({k: summary[k] for k in KEPT if k in summary})
            result = with_deviations(rows)
            if on_row:
                on_row(result)
    return result


def worst(values) -> float:
    """The largest of values, NaN as soon as one is NaN (``max`` keeps a NaN only when it
    comes first, which would let a NaN cost pass as a small deviation)."""
    out = 0.0
    for v in values:
        if math.isnan(v):
            return math.nan
        out = max(out, v)
    return out


def with_deviations(rows: list[dict]) -> dict:
    """Each row's largest relative cost deviation from the first run in the same dtype: the
    first device's (NumPy's, which ``available_devices`` lists first)."""
    for r in rows:
        ref = next(q for q in rows if q["dtype"] == r["dtype"])
        r["max_cost_deviation"] = worst(
            abs(c - c0) / abs(c0) for (_, c), (_, c0) in zip(r["costs"], ref["costs"])
        )
    return {
        "rows": rows,
        "max_cost_deviation": worst(r["max_cost_deviation"] for r in rows),
        "reference": "NumPy, same dtype",
    }


def table(result: dict) -> str:
    """The rows as a text table, with the largest deviation below."""
    head = (
        f"{'device':44} {'dtype':8} {'solver':7} {'ms/iter':>9} {'seconds':>8} "
        f"{'final cost':>11} {'train':>7} {'test':>6} {'dev. vs ref':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(
            f"{r['device'][:44]:44} {r['dtype']:8} {r['solver']:7} {r['ms_per_iteration']:9.3f} "
            f"{r['seconds']:8.3f} {r['final_cost']:11.6f} {r['train_accuracy']:7.4f} "
            f"{r['test_accuracy']:6.2f} {r['max_cost_deviation']:11.2e}"
        )
    lines.append(
        "largest relative cost deviation from NumPy in the same dtype: "
        f"{result['max_cost_deviation']:.2e}"
    )
    return "\n".join(lines)
