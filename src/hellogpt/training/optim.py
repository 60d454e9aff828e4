"""The optimizer: Muon for the weight matrices inside the blocks, AdamW for everything else.

Muon (muon.py) keeps a momentum of each matrix's gradient, like SGD, but steps along that
momentum orthogonalised (a few Newton-Schulz iterations): every direction of the update gets
the same size, so the rare directions learn as fast as the common ones. It is made for the 2-D
weights of hidden layers; the token and position embeddings (the head shares the token embedding),
biases and LayerNorm gains stay with AdamW. On the two-minute task it reached about 0.1 bits per
byte lower than AdamW tuned alone at the same number of steps (benchmarks/RESULTS.md).

`--optimizer adamw` trains every parameter with AdamW, as nanoGPT does.
"""

from __future__ import annotations

import torch

from hellogpt.core.settings import Config
from hellogpt.training.muon import Muon


class Optimizers:
    """Several torch optimizers that step together, each parameter in exactly one of them.

    Every parameter group remembers its peak learning rate ("peak_lr"); the training loop sets
    group["lr"] = peak_lr x the schedule's factor (train.py: lr_factor)."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers
        for group in self.param_groups:
            group["peak_lr"] = group["lr"]

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def set_lr(self, factor: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["peak_lr"] * factor

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"optimizer state for {sorted(state)}, expected {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def make_optimizer(model: torch.nn.Module, config: Config) -> Optimizers:
    """The optimizer config.optimizer names. Weight decay applies to weight matrices and embeddings,
    never to biases and LayerNorm gains."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # a tied head is listed once
    use_muon = config.optimizer == "muon"
    hidden = [(n, p) for n, p in named if use_muon and p.dim() == 2 and n.startswith("blocks.")]
    taken = {id(p) for _, p in hidden}
    matrices = [p for n, p in named if p.dim() >= 2 and id(p) not in taken]
    vectors = [p for n, p in named if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": config.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    adamw_args = dict(lr=config.lr, betas=(config.beta1, config.beta2))
    try:
        adamw = torch.optim.AdamW(groups, fused=True, **adamw_args)  # one kernel for all parameters
    except (RuntimeError, TypeError):  # no fused kernel for this device in this build
        adamw = torch.optim.AdamW(groups, **adamw_args)
    if not use_muon:
        return Optimizers(adamw=adamw)
    # Attention's query, key and value weights are one matrix, orthogonalised as the three they are.
    qkv = {p: 3 for n, p in hidden if n.endswith("attn.qkv.weight")}
    muon = Muon([p for _, p in hidden], lr=config.muon_lr, weight_decay=config.weight_decay, momentum=0.95,
                nesterov=True, splits=qkv)
    return Optimizers(muon=muon, adamw=adamw)
