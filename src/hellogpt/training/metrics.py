"""A run's metrics: metrics.jsonl beside the checkpoints, and the loss curve drawn from it.

Training appends a record per step and per evaluation to
artifacts/checkpoints/<model_name>/metrics.jsonl and draws loss_curve.png at its end;
`hellogpt plot [--model-name NAME]` redraws it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import atomic_path

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss_curve.png"


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file, one JSON object per line, of the run that wrote last."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"There is no {path}: the model has not been trained yet. Train it with `hellogpt train`.")
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON lines ({e}). Delete it; the next training run writes it anew "
                        "from the checkpoint's own history.")
    last_run = records[-1].get("run") if records else None
    return [r for r in records if r.get("run") == last_run]


def _smooth(values: list[float]) -> list[float]:
    """Exponential moving average over about the last 5% of the steps, debiased at the start
    (the raw per-step loss is noisy)."""
    weight = min(0.99, 1 - 20 / max(20, len(values)))
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_loss_curve(records: list[dict], out: Path, title: str) -> Path:
    """Draw train (raw and smoothed) and validation loss against the step; write `out` atomically."""
    import matplotlib

    matplotlib.use("Agg")  # draw to a file, with no window
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (each step)")
        ax.plot(steps, _smooth(losses), color="tab:blue", linewidth=1.5, label="train (smoothed)")
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


class MetricsLog:
    """The metrics history in memory (it goes into every checkpoint) and in metrics.jsonl beside them.

    The file starts as the history so far (a resumed run's checkpoint holds its own), so it always
    matches the run being trained; each record is then appended with one write, whole or not at all.
    Every record carries the run's id (a model and its resumed runs share one), so that two trainers
    writing one file never mix in a curve; a "checkpoint" record says which steps a serial holds."""

    def __init__(self, path: Path | None, history: list[dict], run_id: str):
        self.history = list(history)
        self.run_id = run_id
        self.fd = None
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def append(self, record: dict) -> None:
        record = {**record, "run": self.run_id}
        self.history.append(record)
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
