"""Weight averaging: the model we keep is an exponential moving average of the trained weights.

From halfway through the run, after every optimizer step, average <- decay x average + (1 - decay) x
weights (torch.optim.swa_utils.AveragedModel). The average smooths out the noise of the last few
hundred steps; on the two-minute task it evaluates about 0.01 bits per byte better than the weights
it averages (benchmarks/RESULTS.md). Evaluations, checkpoints' "model" and generation use the
average; training goes on with the weights themselves, which checkpoints keep as "live" to resume.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

START = 0.5  # share of the run's progress after which averaging starts


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = model
        # Made now, before DistributedDataParallel wraps the model (it copies the model); it starts
        # averaging at its first update.
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None

    @property
    def started(self) -> bool:
        return self.average is not None and int(self.average.n_averaged) > 0

    def update(self, progress: float) -> None:
        """After an optimizer step; progress: the run's, 0 to 1."""
        if self.average is not None and progress >= START:
            self.average.update_parameters(self.model)  # the first call copies the weights

    def current(self) -> torch.nn.Module:
        """The weights to evaluate and keep: the average once it has started."""
        return self.average.module if self.started else self.model

    def checkpoint(self) -> dict:
        """The checkpoint's share: "model" the weights to keep, "live" (while averaging) the trained ones."""
        if not self.started:
            return {"model": self.model.state_dict()}
        return {"model": self.average.module.state_dict(), "live": self.model.state_dict(),
                "averaged_steps": int(self.average.n_averaged)}

    def restore(self, ckpt: dict) -> None:
        """Continue from a checkpoint written by checkpoint(); the model holds the checkpoint's "model"."""
        if "live" not in ckpt:
            return
        if self.average is not None:
            self.average.module.load_state_dict(ckpt["model"])
            self.average.n_averaged.fill_(ckpt["averaged_steps"])
        self.model.load_state_dict(ckpt["live"])
