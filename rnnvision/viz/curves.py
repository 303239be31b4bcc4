"""Learning curves from metrics.jsonl rows."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(rows: Sequence[Mapping], keys: Sequence[str], path: str,
                 references: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """One panel per metric name present in the rows, value against step.

    references: {key: {label: value}} horizontal lines drawn on the panel of `key`
    (e.g. a baseline or a target), labelled in its legend.
    """
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        lines = (references or {}).get(key, {})
        for i, (label, value) in enumerate(lines.items()):
            ax.axhline(value, color=f"C{i + 1}", linestyle="--", linewidth=1, label=label)
        if lines:
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
