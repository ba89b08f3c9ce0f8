"""The noise schedule, the v-prediction target and the DDIM sampler.

Continuous time t in [0, 1] with the cosine schedule alpha = cos(pi t / 2), sigma = sin(pi t / 2) (alpha^2 +
sigma^2 = 1): z_t = alpha z_0 + sigma eps. The network predicts v = alpha eps - sigma z_0 (Salimans & Ho 2022),
which stays well scaled at both ends of the schedule, where predicting eps or z_0 alone blows up.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t [B] -> (alpha, sigma), each [B, 1, 1, 1] for broadcasting over latents."""
    phi = (t.float() * (math.pi / 2)).view(-1, 1, 1, 1)
    return torch.cos(phi), torch.sin(phi)


def noised(z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (z_t, the v target) for clean latents z0 [B, C, h, w] at times t [B] with noise eps."""
    a, s = alpha_sigma(t)
    return a * z0 + s * eps, a * eps - s * z0


def ddim_sample(predict_v: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                steps: int) -> torch.Tensor:
    """Deterministic DDIM from pure noise at t=1 to t=0 in `steps` equal steps; `predict_v(z_t, t [B])` -> v.

    Each step estimates (z_0, eps) from v and moves along the schedule to the next time, which with this schedule
    is a rotation of the (z_0, eps) pair by the step's angle."""
    z = noise
    ts = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    for t, t_next in itertools.pairwise(ts):
        a, s = alpha_sigma(t.expand(z.shape[0]))
        v = predict_v(z, t.expand(z.shape[0]))
        z0, eps = a * z - s * v, s * z + a * v
        a2, s2 = alpha_sigma(t_next.expand(z.shape[0]))
        z = a2 * z0 + s2 * eps
    return z
