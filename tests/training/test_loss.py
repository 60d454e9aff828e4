"""The chunked head-and-loss (loss.py) equals F.cross_entropy on the full logits: value and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hellogpt.training.loss import LinearCrossEntropy, linear_cross_entropy


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), vocab=st.integers(2, 50), rows=st.integers(1, 50), seed=st.integers(0, 10_000))
def test_equals_the_plain_loss_and_gradients(n, vocab, rows, seed):
    torch.manual_seed(seed)
    x = (torch.randn(n, 8) * 3).requires_grad_()  # large enough that the softmax is far from uniform
    w = torch.randn(vocab, 8, requires_grad=True)
    t = torch.randint(0, vocab, (n,))
    plain = F.cross_entropy(x @ w.t(), t)
    gx, gw = torch.autograd.grad(plain * 2.5, (x, w))  # an upstream gradient other than 1
    chunked = LinearCrossEntropy.apply(x, w, t, rows, True)
    cx, cw = torch.autograd.grad(chunked * 2.5, (x, w))
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cx, gx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cw, gw, rtol=1e-4, atol=1e-5)


def test_the_model_trains_alike_either_way(make_gpt):
    """GPT.forward(loss_fn=linear_cross_entropy): the same loss and gradients, the tied embedding included."""
    model = make_gpt(dropout=0.0).train()
    idx = torch.randint(0, model.config.vocab_size, (3, model.config.max_seq_len))
    targets = torch.roll(idx, -1, dims=1)
    _, plain = model(idx, targets)
    plain.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    logits, chunked = model(idx, targets, loss_fn=linear_cross_entropy)
    chunked.backward()
    assert logits is None
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_no_gradient_work_under_no_grad(monkeypatch):
    """Evaluation (torch.no_grad) computes the loss only, though the weights require gradients."""
    x, w, t = torch.randn(5, 4), torch.randn(7, 4, requires_grad=True), torch.randint(0, 7, (5,))
    calls = []  # the gradient work writes into tensors (g[rows, targets] -= 1, dx[rows] = ...); the loss does not
    setitem = torch.Tensor.__setitem__
    monkeypatch.setattr(torch.Tensor, "__setitem__", lambda *a, **k: calls.append(1) or setitem(*a, **k))
    with torch.no_grad():
        loss = linear_cross_entropy(x, w, t)
    torch.testing.assert_close(loss, F.cross_entropy(x @ w.t(), t))
    assert calls == []
    linear_cross_entropy(x, w, t).backward()
    assert calls and w.grad is not None
