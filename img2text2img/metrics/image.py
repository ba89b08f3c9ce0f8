"""Image-set metrics in the features of one of our encoders.

`frechet_feature_distance` is the Fréchet distance between two Gaussians fitted to encoder features of two image
sets (e.g. generated vs real test images). It is the formula of FID but NOT the standard FID: FID is defined on
Inception-v3 pool features, whose weights we do not have, so numbers here are only comparable with numbers computed
in the same encoder, at the same input size, on the same number of images. Lower is better.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from img2text2img.models import evaluating


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, D] -> (mean [D], covariance [D, D]) in float64."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    x = x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    Tr((C1 C2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    C1^(1/2) C2 C1^(1/2) (same eigenvalues as C1 C2), which needs no scipy and stays real when N < D makes the
    covariances singular."""
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def frechet_feature_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N_a, D] and [N_b, D] (lower = closer)."""
    return frechet_distance_from_stats(*feature_stats(features_a), *feature_stats(features_b))


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, D] x [M, D] -> [N, M] cosine similarities."""
    return F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T


def paired_cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row i of `a` against row i of `b`: [N, D] x [N, D] -> [N]."""
    return F.cosine_similarity(a.float(), b.float(), dim=1)


@torch.inference_mode()
def encoder_features(images: torch.Tensor | Sequence, encoder, batch_size: int = 64, size: int | None = None) -> torch.Tensor:
    """Pooled encoder features [N, D] of images given as a [N, 3, H, W] tensor in [0, 1] or a list of PIL images.

    Images are resized (bilinear) to `size` (default: the encoder's own input size) and normalised with the
    encoder's mean/std; `encoder` follows the `models.encoders.Encoder` contract: images -> (pooled, grid)."""
    if not isinstance(images, torch.Tensor):
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        images = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    pre = encoder.preprocess
    size = size or pre.image_size
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    device = next(encoder.parameters()).device
    out = []
    with evaluating(encoder):
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].float()
            if x.shape[-1] != size or x.shape[-2] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            pooled, _ = encoder(((x - mean) / std).to(device))
            out.append(pooled.float().cpu())
    return torch.cat(out)
