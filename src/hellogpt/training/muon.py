"""Muon: steps along the momentum orthogonalised, for the weight matrices inside the blocks.

The update is torch.optim.Muon's (Keller Jordan's Muon, in PyTorch since 2.9): keep a momentum of
each matrix's gradient, look ahead along it (Nesterov), then run a few Newton-Schulz iterations that
push every singular value of that step towards 1, so that rare directions learn as fast as common
ones. The step is scaled by sqrt(max(1, rows / cols)) and weight decay is decoupled, as there.

It is written out here rather than taken from torch.optim.Muon for what matters on a CPU:
- torch.optim.Muon always orthogonalises in bfloat16. A CPU without native bfloat16 arithmetic (no
  AVX512-BF16 or AMX: most laptops) emulates it: with oneDNN and ATen held to AVX2
  (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), torch.optim.Muon's orthogonalisation of the
  two-minute model's 16 matrices alone took 486 ms per step, this whole Muon step in float32 19 ms. Here
  bfloat16 is used only where the hardware has it (CUDA, or a CPU with AVX512-BF16 or AMX).
- It orthogonalises all the matrices of one shape in one batched product: its step for the two-minute
  model's 16 matrices took 14.6 ms against torch.optim.Muon's 22.3 ms (medians, two threads, native
  bfloat16; benchmarks/RESULTS.md).
- In float32, wide matrices iterate on their small Gram matrix (orthogonalise), a third fewer multiply-adds.
- A matrix can be split into blocks of rows (`splits`), each orthogonalised and scaled as a matrix of its
  own: attention's fused query, key and value weights are three (torch.optim.Muon takes the whole).
"""

from __future__ import annotations

import math

import torch

from hellogpt.core.device import native_bfloat16

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's quintic: the steepest slope at 0 that still converges


def orthogonalisation_dtype(device_type: str) -> torch.dtype:
    """bfloat16 where the device multiplies it natively (device.native_bfloat16), else float32."""
    return torch.bfloat16 if native_bfloat16(device_type) else torch.float32


def orthogonalise(G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, rows, cols) with rows <= cols -> the same shape: each matrix with its singular values moved to
    about 1 (between roughly 0.7 and 1.2: the iteration trades exactness for speed) and its singular vectors
    kept. Each iteration is X <- a X + (b A + c A^2) X with A = X X^T (rows x rows)."""
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # singular values <= Frobenius norm = 1
    rows, cols = X.shape[-2:]
    if dtype != torch.float32 or 2 * cols <= 3 * rows:
        for _ in range(steps):
            A = X @ X.mT  # (n, rows, rows)
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
            X = torch.baddbmm(X, B, X, beta=a)  # a X + (b A + c A^2) X
        return X
    # The same iteration on the Gram matrix alone, for wide matrices (cols > 1.5 rows): each step is
    # X <- Q X with Q = a I + b A + c A^2, so A <- Q A Q = Q^2 A (Q and A commute: both are polynomials
    # in the first A), and the product P of the Qs multiplies X once at the end. Matrix products of
    # rows x rows instead of rows x cols: for the blocks' 96 x 384 matrices, a third fewer multiply-adds.
    # Only in float32, where it is checked against the plain form (tests/test_muon.py); how its repeated
    # products of A round in bfloat16 is not measured, so bfloat16 keeps the plain form.
    A = X @ X.mT  # (n, rows, rows)
    P = None
    for step in range(steps):
        Q = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        Q.diagonal(dim1=-2, dim2=-1).add_(a)  # + a I
        P = Q if P is None else Q @ P
        if step < steps - 1:
            A = Q @ (Q @ A)
    return P @ X


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, ns_dtype: torch.dtype | None = None,
                 splits: dict[torch.Tensor, int] | None = None):
        """ns_dtype: the orthogonalisation's dtype (None: orthogonalisation_dtype of the parameters' device).
        splits: matrices to cut into that many blocks of rows, each orthogonalised as a matrix of its own
        (attention's fused query, key and value weights are three); a setting, not state, so checkpoints
        keep torch's format whatever it says."""
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)
        self.splits = dict(splits or {})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2 or p.size(0) % self.splits.get(p, 1):
                    raise ValueError(f"Muon takes 2-D weight matrices only, with rows a multiple of their split "
                                     f"({tuple(p.shape)}, split {self.splits.get(p, 1)})")
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            # Blocks of one shape, tall ones turned on their side (a 384 x 96 and a 96 x 384 alike), are
            # orthogonalised together in one batched product: (weights, their update) by shape.
            by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                p.mul_(1 - lr * group["weight_decay"])
                split = self.splits.get(p, 1)
                for block, u in zip(p.chunk(split), update.chunk(split)):  # views of rows
                    by_shape.setdefault((min(u.shape), max(u.shape)), []).append((block, u))
            for pairs in by_shape.values():
                blocks = [block for block, _ in pairs]
                updates = torch.stack([u.mT if _tall(u) else u for _, u in pairs])  # (n, rows, cols), rows <= cols
                dtype = self.ns_dtype or orthogonalisation_dtype(blocks[0].device.type)
                for block, u in zip(blocks, orthogonalise(updates, group["ns_steps"], dtype)):
                    scale = lr * math.sqrt(max(1.0, block.size(0) / block.size(1)))
                    block.add_((u.mT if _tall(block) else u).to(block.dtype), alpha=-scale)


def _tall(m: torch.Tensor) -> bool:
    return m.size(0) > m.size(1)
