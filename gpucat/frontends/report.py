"""A run's report: the JSON-ready record of a fit (``summarize``), the reference recipe's
whole job, training then scoring (``run_recipe``), and the model a run leaves (``to_model``):
one path from training to a model for the command line, the Python API, CatClassifier and
`gpucat compare`."""

from __future__ import annotations

from collections.abc import Callable

from gpucat.backends import Device
from gpucat.config import TrainConfig
from gpucat.errors import TrainingDiverged
from gpucat.modelfiles.model import Model
from gpucat.nn.inference import dead_layers, score
from gpucat.nn.network import params_to_host
from gpucat.training.loop import TrainResult, fit
from gpucat.training.reducers import LOCAL


def summarize(device: Device, config: TrainConfig, result: TrainResult) -> dict:
    """The JSON-ready record of a run: recipe, device, logged costs, timing."""
    recipe = ("dtype", "learning_rate", "iterations", "seed")
    kept = ("solver", "cost_kind", "best_iteration", "stopped_early", "iterations_done")
    kept += ("first_iteration", "seconds")
    return {
        "device": device.label,
        "backend": device.name,
        "layers": list(config.layers),
        **{k: getattr(config, k) for k in recipe},
        **{k: getattr(result, k) for k in kept},
        "costs": [[i, c] for i, c in result.costs],
        "validation_costs": [[i, c] for i, c in result.val_costs],
        "final_cost": result.costs[-1][1] if result.costs else None,
        "ms_per_iteration": result.ms_per_iteration,
        "reduce": result.reduce_how,
    }


def run_recipe(
    device: Device,
    config: TrainConfig,
    train_set,
    test_set=None,
    on_log: Callable[[int, float | None, float | None], None] | None = None,
    reducer=LOCAL,
    **fit_options,
) -> tuple[TrainResult, dict]:
    """Train on train_set and score the model, on every process of the run: the training
    examples (those held out for validation excluded), the validation ones, and test_set
    when given. Returns the result and a JSON-ready summary, the same on every process."""
    result = fit(device, config, train_set, on_log=on_log, reducer=reducer, **fit_options)
    summary = summarize(device, config, result)
    summary["processes"] = reducer.size
    # hidden layers whose units are all inactive on every training image
    summary["dead_layers"] = dead_layers(device, result.params, result.train, config.dtype, reducer)
    for name, ds in (
        ("train", result.train),
        ("validation", result.validation),
        ("test", test_set),
    ):
        if ds is None:
            continue
        correct, n, nonfinite = score(device, result.params, ds, config.dtype, reducer)
        if nonfinite:
            raise TrainingDiverged(
                "training diverged: the trained model predicts NaN; try a smaller --learning-rate."
            )
        summary.update(
            {f"{name}_accuracy": correct / n, f"{name}_correct": correct, f"{name}_examples": n}
        )
    return result, summary


def to_model(device: Device, config: TrainConfig, result: TrainResult, summary: dict) -> Model:
    """The trained model as every front end saves it: the parameters on the host, and as
    metadata the recipe, the device and the run's record (``summarize``'s, scored)."""
    meta = {"recipe": config.to_dict(), "device": device.label, "result": summary}
    return Model(params_to_host(device, result.params), meta)
