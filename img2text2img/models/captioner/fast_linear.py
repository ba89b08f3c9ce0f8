"""Decoder steps on a few rows, in the faster form of the same matrix products.

A beam search sends a few rows (its beams) through the decoder's largest matrices at every word. For 2-8 rows the
CPU BLAS computes x @ W.T (what nn.Linear does) markedly slower than (W @ x.T).T, the same product with the weight
as the long side. Searches run with grad off and take that form; with grad on
(training, self-critical sampling) the ordinary modules run, so autograd is untouched.
"""
from __future__ import annotations

import torch
from torch import nn

FEW_ROWS = range(2, 9)


def weight_side(x: torch.Tensor) -> bool:
    """Whether `x` is a batch the weight-side form is faster for (few rows, grad off)."""
    return not torch.is_grad_enabled() and x.dim() == 2 and x.shape[0] in FEW_ROWS


def decode_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, computed as (W @ x.T).T when that is faster (few rows, grad off)."""
    if not weight_side(x):
        return layer(x)
    xt = x.contiguous().t()  # a column-major [in, rows] view: BLAS is ~2x slower given the same numbers row-major
    y = layer.weight @ xt if layer.bias is None else torch.addmm(layer.bias[:, None], layer.weight, xt)
    return y.t().contiguous()  # row-major out, as the layer's own: later reductions over the last dim stay fast


def decode_lstm_step(owner: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                     suffix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step of an `nn.LSTMCell` (suffix "") or of the first layer of an `nn.LSTM` (suffix "_l0") -> (h, c),
    with the gate products in the faster form when `decode_linear` would use it (gate order i, f, g, o, as torch's)."""
    if not weight_side(x):
        if isinstance(owner, nn.LSTMCell):
            return owner(x, (h, c))
        _, (h1, c1) = owner(x[:, None], (h[None].contiguous(), c[None].contiguous()))
        return h1[0], c1[0]
    w_ih, w_hh = getattr(owner, f"weight_ih{suffix}"), getattr(owner, f"weight_hh{suffix}")
    bias = getattr(owner, f"bias_ih{suffix}") + getattr(owner, f"bias_hh{suffix}")
    gates = torch.addmm(torch.addmm(bias[:, None], w_ih, x.contiguous().t()), w_hh, h.contiguous().t())
    i, f, g, o = gates.t().contiguous().chunk(4, 1)  # row-major again, so h and c leave row-major
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c
