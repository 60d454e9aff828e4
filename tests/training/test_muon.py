"""Muon (muon.py): the orthogonalisation, the dtype it runs in, and the same steps as torch.optim.Muon."""

from __future__ import annotations

import pytest
import torch

from hellogpt.training import muon
from hellogpt.core.device import native_bfloat16
from hellogpt.training.muon import Muon, orthogonalise


@pytest.mark.parametrize("shape", [(3, 16, 64), (2, 16, 20), (1, 32, 32)])  # the Gram form, the plain form twice
def test_orthogonalise_moves_singular_values_towards_one_and_keeps_the_singular_vectors(shape):
    torch.manual_seed(0)
    G = torch.randn(shape) * torch.logspace(-1, 0, shape[-1])  # singular values spread over a decade
    O = orthogonalise(G)
    assert O.shape == G.shape
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    values = torch.linalg.svdvals(O)
    assert values.min() > 0.5 and values.max() < 1.3  # from 0.1..1 (relative) to about 1: every direction the same size
    # In G's own singular bases O is diagonal: the iteration changes the values, not the directions.
    inner = U.mT @ O @ Vh.mT
    off = inner - torch.diag_embed(torch.diagonal(inner, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-3


def test_the_gram_form_is_the_plain_iteration():
    """Wide matrices iterate on their Gram matrix alone: the same result as the iteration written out."""
    torch.manual_seed(0)
    G = torch.randn(4, 24, 96, dtype=torch.float64) * torch.logspace(-2, 0, 24, dtype=torch.float64)[:, None]
    a, b, c = muon.NS_COEFFICIENTS
    X = G / G.norm(dim=(-2, -1), keepdim=True)
    for _ in range(5):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    torch.testing.assert_close(orthogonalise(G.float()), X.float(), rtol=0, atol=1e-5)


@pytest.fixture
def fresh_dtype_cache():
    native_bfloat16.cache_clear()
    yield
    native_bfloat16.cache_clear()  # no patched answer left for later tests


def test_bfloat16_only_where_the_hardware_has_it(monkeypatch, fresh_dtype_cache):
    for capabilities, expected in [({"avx2": True}, torch.float32), ({"avx512_bf16": True}, torch.bfloat16),
                                   ({"amx_bf16": True}, torch.bfloat16)]:
        # raising=False: PyTorch before 2.11 has no torch.cpu.get_capabilities
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda c=capabilities: c, raising=False)
        native_bfloat16.cache_clear()
        assert muon.orthogonalisation_dtype("cpu") is expected
    assert muon.orthogonalisation_dtype("cuda") is torch.bfloat16
    assert muon.orthogonalisation_dtype("mps") is torch.float32


def _three_steps(ns_dtype):
    """Our Muon and torch.optim.Muon from the same weights through the same three gradients; a matrix
    without a gradient in a step is left alone by both (no weight decay either)."""
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 16), (64, 16), (16, 64), (48, 16)]
    ours = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = Muon(ours, lr=0.03, weight_decay=0.1, ns_dtype=ns_dtype)
    reference = torch.optim.Muon(theirs, lr=0.03, weight_decay=0.1, momentum=0.95, nesterov=True,
                                 adjust_lr_fn="original")
    for step in range(3):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            p.grad = None if (step, i) == (1, 2) else torch.randn(p.shape)
            q.grad = None if p.grad is None else p.grad.clone()
        mine.step()
        reference.step()
    return ours, theirs


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon came in PyTorch 2.9")
def test_same_steps_as_torch_optim_muon():
    """In bfloat16, as torch.optim.Muon computes, the batched update is the same update (to a bfloat16
    rounding of the step: another matrix library may round the batched product differently)."""
    for p, q in zip(*_three_steps(torch.bfloat16)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-4)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon came in PyTorch 2.9")
def test_float32_steps_agree_with_torch_optim_muon():
    """In float32 (CPUs without native bfloat16) the steps differ from torch's bfloat16 ones only by that
    rounding: a few 1e-4, against 0.03 for a step in a wrong direction."""
    for p, q in zip(*_three_steps(torch.float32)):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-3)


def test_a_split_matrix_steps_as_its_blocks_would_alone():
    """A matrix split in 3 (attention's fused query, key and value weights) steps each block of rows as
    a matrix of its own, with its own scale: as Muon steps three separate matrices."""
    torch.manual_seed(0)
    fused = torch.nn.Parameter(torch.randn(48, 16) * 0.02)
    apart = [torch.nn.Parameter(block.detach().clone()) for block in fused.chunk(3)]
    split = Muon([fused], lr=0.03, weight_decay=0.1, splits={fused: 3})
    alone = Muon(apart, lr=0.03, weight_decay=0.1)
    for _ in range(3):
        fused.grad = torch.randn(fused.shape)
        for p, g in zip(apart, fused.grad.chunk(3)):
            p.grad = g.clone()
        split.step()
        alone.step()
    torch.testing.assert_close(fused.detach(), torch.cat([p.detach() for p in apart]), rtol=0, atol=1e-6)
    # Unsplit, the same matrix takes another step (one orthogonal 48 x 16 update, not three 16 x 16 ones).
    whole = torch.nn.Parameter(torch.ones(48, 16))
    cut = torch.nn.Parameter(torch.ones(48, 16))
    whole.grad = torch.randn(48, 16)
    cut.grad = whole.grad.clone()
    Muon([whole], lr=0.03).step()
    Muon([cut], lr=0.03, splits={cut: 3}).step()
    assert (whole - cut).abs().max() > 1e-3


def test_muon_takes_matrices_only():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    p = torch.nn.Parameter(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="multiple of their split"):
        Muon([p], splits={p: 3})
