"""Pooling of convolutional / patch-token feature maps into image descriptors (pure tensor functions).

* MAC: max over all spatial positions (Tolias et al., 2016).
* R-MAC regions: square regions at ``levels`` scales; at scale l the side is 2 * min(H, W) / (l + 1) and the
  number of regions along each dimension is the one that makes consecutive regions overlap closest to
  ``overlap`` (0.4) while covering the map — l x l regions on a square map (1 + 4 + 9 = 14 for 3 levels).
* GeM: generalised mean (Radenović et al., 2018), p = 1 average, p -> inf max.
"""
from __future__ import annotations

import math



def _count(dim: int, side: int, overlap: float) -> int:
    """Regions along one dimension: cover ``dim`` with regions of ``side`` whose overlap is closest to ``overlap``."""
    if side >= dim:
        return 1
    best, best_err = None, math.inf
    for m in range(2, dim + 1):
        if m * side < dim:
            continue
        ovl = (m * side - dim) / ((m - 1) * side)
        err = abs(ovl - overlap)
        if err < best_err - 1e-9:
            best, best_err = m, err
    return best or 1


def _starts(dim: int, side: int, m: int) -> list[int]:
    if m == 1:
        return [(dim - side) // 2]
    return [int(round(i * (dim - side) / (m - 1))) for i in range(m)]


def rmac_regions(h: int, w: int, levels: int = 3, overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """(y, x, height, width) of every region, coarsest level first."""
    out = []
    short = min(h, w)
    for lvl in range(1, levels + 1):
        side = max(1, int(math.floor(2 * short / (lvl + 1))))
        if lvl == 1:
            side = short  # scale 1 = the largest square (2 * min / 2)
        ny, nx = _count(h, side, overlap), _count(w, side, overlap)
        for y in _starts(h, side, ny):
            for x in _starts(w, side, nx):
                if (y, x, side, side) not in out:  # tiny maps repeat regions across levels
                    out.append((y, x, side, side))
    return out


def mac(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C)."""
    import torch

    return fmap.amax(dim=(2, 3))


def gem(fmap: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    import torch

    return fmap.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def region_max(fmap: torch.Tensor, regions: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """(B, C, H, W) -> (B, R, C): MAC of each region."""
    import torch

    return torch.stack([fmap[:, :, y:y + h, x:x + w].amax(dim=(2, 3)) for y, x, h, w in regions], dim=1)
