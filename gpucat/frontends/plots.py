"""Pictures (optional: matplotlib). Each function writes one PNG, atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from gpucat.errors import GpucatError
from gpucat.files import atomic_write


def pyplot():
    """matplotlib's pyplot drawing to files (the Agg backend), or a GpucatError naming the
    extra that installs it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise GpucatError(
            "pictures need matplotlib, which is not installed: "
            "pip install 'gpucat[plot]' (or pip install matplotlib)."
        ) from None
    return plt


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    atomic_write(path, buf.getvalue())


def plot_costs(
    path: str | os.PathLike, series: dict[str, Sequence[Sequence[float]]], title: str
) -> None:
    """Cost against iteration, one line per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, costs in series.items():
        it, c = zip(*costs)
        ax.plot(it, c, marker="o", markersize=2.5, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost (mean cross-entropy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_device_comparison(path: str | os.PathLike, rows: list[dict]) -> None:
    """Left: cost curves per device and dtype; right: milliseconds per iteration."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    labels = [f"{r['backend']} {r['dtype']} {r['solver']}" for r in rows]
    for label, r in zip(labels, rows):
        it, c = zip(*r["costs"])
        a1.plot(it, c, label=label, alpha=0.8)
    a1.set_xlabel("iteration")
    a1.set_ylabel("cost")
    a1.set_title("cost per device (identical start)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.barh(labels, [r["ms_per_iteration"] for r in rows], color="tab:orange")
    a2.set_xlabel("ms per iteration (training seconds / iterations, device synchronized)")
    a2.set_title("training time")
    a2.grid(alpha=0.3, axis="x")
    _save(fig, path)
    plt.close(fig)


def plot_mislabeled(
    path: str | os.PathLike,
    images: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    max_images: int = 24,
) -> int:
    """A grid of the misclassified images with predicted and true class; returns their count."""
    plt = pyplot()
    predicted = probabilities > 0.5
    wrong = np.flatnonzero(predicted != (labels > 0.5))
    shown = wrong[:max_images]
    cols = max(1, min(6, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    names = ("non-cat", "cat")
    for ax, k in zip(axes.ravel(), shown):
        ax.imshow(images[k])
        ax.set_title(
            f"#{k}: predicted {names[int(predicted[k])]}\n"
            f"(p={probabilities[k]:.2f}), true {names[int(labels[k] > 0.5)]}",
            fontsize=7,
        )
    if not len(shown):
        axes[0, 0].text(0.5, 0.5, "no mislabeled images", ha="center", va="center")
    _save(fig, path)
    plt.close(fig)
    return len(wrong)


def plot_sweep(path: str | os.PathLike, result: dict) -> None:
    """Left: ms per iteration against examples (log-log), one line per device and dtype, at
    the first width swept; right: the GFLOP/s achieved against examples, each device's peak
    in that dtype as a dashed line of the same colour."""
    plt = pyplot()
    rows = result["rows"]
    width = rows[0]["width"] if rows else None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["width"] == width:
            series.setdefault((r["device"], r["dtype"]), []).append(r)
    for (device, dtype), mine in series.items():
        mine.sort(key=lambda r: r["examples"])
        m = [r["examples"] for r in mine]
        label = f"{device} {dtype}"
        (line,) = a1.plot(m, [r["ms_per_iteration"] for r in mine], marker="o", label=label)
        a2.plot(m, [r["gflops"] for r in mine], marker="o", color=line.get_color(), label=label)
        a2.axhline(mine[0]["peak_gflops"], color=line.get_color(), linestyle="--", linewidth=1)
    for ax, ylabel in ((a1, "ms per iteration (median)"), (a2, "GFLOP/s (dashed: the peak)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"examples (hidden width {width})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
