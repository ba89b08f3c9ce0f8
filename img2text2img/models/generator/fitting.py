"""Reading flat-colour pictures: k-means, the palette, connected regions and their cut-out mattes. The scene
generator fits its palette and sprite templates with these (no scipy or sklearn needed)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sprite_frame(cover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How much of each pixel a shape covers [N, S, S] -> its centroid x, y in [-1, 1] and the half-size of the
    box a template spans, 2 * sqrt(area) / S, each [N]: the frame templates are cut and drawn in."""
    S = cover.shape[-1]
    mass = cover.sum((1, 2))
    pos = (torch.arange(S, device=cover.device, dtype=cover.dtype) + 0.5) / S * 2 - 1
    return (cover.sum(1) * pos).sum(1) / mass, (cover.sum(2) * pos).sum(1) / mass, 2 * mass.sqrt() / S


def kmeans(points: torch.Tensor, centres: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd's iterations from the given centres [k, D] over points [N, D]; an empty cluster keeps its centre."""
    c = centres
    for _ in range(iters):
        assign = torch.cdist(points, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, points)
        n = torch.bincount(assign, minlength=len(c)).unsqueeze(1)
        c = torch.where(n > 0, sums / n.clamp(min=1), c)
    return c


def farthest_point_kmeans(points: torch.Tensor, k: int, gen: torch.Generator, iters: int) -> torch.Tensor:
    """k-means over points [M, D] -> centres [k, D], started from one random point and then each next the farthest
    from those taken: rare kinds (a shape few pictures hold) get a centre of their own instead of being merged."""
    centres = [points[int(torch.randint(len(points), (1,), generator=gen))]]
    dist = (points - centres[0]).pow(2).sum(1)
    while len(centres) < k:
        centres.append(points[dist.argmax()])
        dist = torch.minimum(dist, (points - centres[-1]).pow(2).sum(1))
    return kmeans(points, torch.stack(centres), iters)



def unit_float(images: torch.Tensor) -> torch.Tensor:
    """Pictures as uint8 or floats -> floats in [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def fit_palette(images: torch.Tensor, k: int, seed: int = 0, sample: int = 200_000, iters: int = 15,
                separation: float = 0.12) -> torch.Tensor:
    """The `k` colours a palette generator draws with: k-means over the pixels of `images` ([N, 3, H, W], uint8 or
    [0, 1]) -> [k, 3] in [0, 1].

    Started from the densest colours rather than at random or at the farthest ones: the most common colours (on a
    coarse grid), each at least `separation` away from those already taken. The colour of one small shape is a
    tiny share of the pixels, yet far denser than the blends along its edges; a random or farthest-point start
    spends centres on those blends and lets k-means merge yellow with orange, after which the generator could
    never draw either. Farthest points fill up if too few dense colours are far enough apart."""
    x = unit_float(images)
    px = x.permute(0, 2, 3, 1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(int(seed))
    if px.shape[0] > sample:
        px = px[torch.randint(px.shape[0], (sample,), generator=gen)]
    bins, inverse, counts = (px * 31).round().unique(dim=0, return_inverse=True, return_counts=True)
    means = torch.zeros(len(bins), 3).index_add_(0, inverse, px) / counts.unsqueeze(1)
    centres: list[torch.Tensor] = []
    for i in counts.argsort(descending=True).tolist():
        if len(centres) == k:
            break
        if all(float((means[i] - c).norm()) >= separation for c in centres):
            centres.append(means[i])
    dist = torch.cdist(px, torch.stack(centres)).min(1).values.pow(2)
    while len(centres) < k:
        centres.append(px[dist.argmax()])
        dist = torch.minimum(dist, (px - centres[-1]).pow(2).sum(1))
    return kmeans(px, torch.stack(centres), iters).clamp(0, 1)



def cut_frames(cover: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coverage maps [M, S, S] -> each cut out in its own sprite frame ([M, R, R]), and that frame's centroid x, y and
    half-size (`sprite_frame`), each [M]: how templates are cut from pictures."""
    cx, cy, half = sprite_frame(cover)  # callers pass regions of min_pixels or more
    zero = torch.zeros_like(half)
    theta = torch.stack([torch.stack([half, zero, cx], 1), torch.stack([zero, half, cy], 1)], 1)
    grid = F.affine_grid(theta, [len(cover), 1, resolution, resolution], align_corners=False)
    cuts = F.grid_sample(cover.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return cuts[:, 0], cx, cy, half


def components(fg: torch.Tensor) -> torch.Tensor:
    """Foreground masks [N, S, S] (bool) -> connected-component labels [N, S, S] (0 = background): each pixel takes
    the largest pixel number among its 8 neighbours until nothing changes (no scipy needed)."""
    N, S, _ = fg.shape
    keep = fg.float()
    lab = torch.arange(1, S * S + 1, dtype=torch.float32).view(1, S, S).expand(N, -1, -1) * keep
    for _ in range(S * S):
        grown = F.max_pool2d(lab.unsqueeze(1), 3, stride=1, padding=1).squeeze(1) * keep
        if torch.equal(grown, lab):
            break
        lab = grown
    return lab.long()


def border_colour(x: torch.Tensor) -> torch.Tensor:
    """Pictures [N, 3, S, S] -> the median colour of each one's border pixels [N, 3]: its background, on shapes."""
    return torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], 2).median(2).values


def foreground(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """Pictures [N, 3, S, S] in [0, 1] -> [N, S, S] bool: pixels away from the picture's border colour."""
    return (x - border_colour(x)[:, :, None, None]).abs().amax(1) > threshold
