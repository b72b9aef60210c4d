"""The stored normalisation and projection as torch modules, so that they can live inside an exported graph.

Each module reproduces its numpy counterpart (:mod:`volkd.data.normalize`, :mod:`volkd.projection`)
on float32 tensors; :func:`volkd.inference.export.export_model` checks the whole chain against
:func:`volkd.train.predict_proba`. The ``entropy`` projection (per-slice 8-bit histograms) is not
expressible as export-friendly tensor ops without changing results at bin edges: it stays a pre-step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from volkd.data.atlas import occipital_mask
from volkd.data.cohort import VIEW_AXIS
from volkd.errors import ConfigError
from volkd.projection import rank_pool_weights

#: Projection methods that can be computed inside the exported graph.
IN_GRAPH_METHODS = ("slice", "slices", "mip", "mean", "std", "dynamic")


class TorchNormalizer(nn.Module):
    """A fitted normaliser's transform on ``(N, D, H, W)`` tensors (zscore, global_zscore, reference, none)."""

    def __init__(self, state: dict[str, Any], grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.name = str(state["name"])
        if self.name == "zscore":
            self.register_buffer("mean", torch.as_tensor(np.asarray(state["mean"], np.float32)))
            self.register_buffer("std", torch.as_tensor(np.asarray(state["std"], np.float32)))
        elif self.name == "global_zscore":
            self.register_buffer("mean", torch.tensor(np.float32(state["mean"])))
            self.register_buffer("std", torch.tensor(np.float32(state["std"])))
        elif self.name == "reference":
            mask = state.get("mask")  # the stored mask, else the atlas occipital region on the grid (as the normaliser)
            if mask is None:
                mask = occipital_mask(tuple(grid), state.get("affine"))
            if tuple(np.shape(mask)) != tuple(grid):
                raise ConfigError(f"reference normaliser: mask grid {np.shape(mask)} differs from the training grid {tuple(grid)}")
            self.register_buffer("mask", torch.as_tensor(np.asarray(mask, np.float32)))
            self.count = float(mask.sum())
        elif self.name != "none":
            raise ConfigError(f"normaliser {self.name!r} cannot be exported; known: zscore, global_zscore, reference, none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name in ("zscore", "global_zscore"):
            return (x - self.mean) / self.std
        if self.name == "reference":
            ref = (x * self.mask).sum(dim=(1, 2, 3)) / self.count
            return x / ref[:, None, None, None]
        return x


def _orient(img: torch.Tensor) -> torch.Tensor:
    """:func:`volkd.projection.orient` on tensors: rows = second image axis reversed."""
    return img.transpose(-1, -2).flip(-2)


class TorchProjection(nn.Module):
    """:func:`volkd.projection.project` for one resolved :class:`ProjectionSpec` on ``(N, D, H, W)`` tensors."""

    def __init__(self, spec: Any, grid: tuple[int, int, int]) -> None:
        super().__init__()
        if spec.method not in IN_GRAPH_METHODS:
            raise ConfigError(f"projection {spec.method!r} cannot run inside an exported graph (in-graph: {list(IN_GRAPH_METHODS)})")
        spec.validate_for(grid)
        self.spec = spec
        self.grid = tuple(int(g) for g in grid)
        self.size = spec.target_size(self.grid)
        if spec.method == "dynamic":
            for view in spec.views:
                t = self.grid[VIEW_AXIS[view]]
                self.register_buffer(f"alpha_{view}", torch.as_tensor(rank_pool_weights(t).astype(np.float32)))

    def _method(self, x: torch.Tensor, view: str) -> torch.Tensor:
        s, dim = self.spec, 1 + VIEW_AXIS[view]
        if s.method in ("slice", "slices"):
            eps = s.epsilon if s.method == "slices" else 0
            ref = int(s.ref_index[view])
            return x.narrow(dim, ref - eps, 2 * eps + 1).movedim(dim, 1)
        if s.method == "mip":
            return x.amax(dim=dim).unsqueeze(1)
        if s.method == "mean":
            return x.mean(dim=dim).unsqueeze(1)
        if s.method == "std":
            return x.var(dim=dim, unbiased=False).clamp_min(0).sqrt().unsqueeze(1)
        alpha: torch.Tensor = getattr(self, f"alpha_{view}")
        shape = [1, 1, 1, 1]
        shape[dim] = alpha.numel()
        img = (x * alpha.reshape(shape)).sum(dim=dim)
        if s.dynamic_minmax:
            n = img.shape[0]
            flat = img.reshape(n, -1)
            lo, hi = flat.amin(1), flat.amax(1)
            span = hi - lo
            tol = 8 * alpha.numel() * float(np.finfo(np.float32).eps) * float(alpha.abs().sum()) * x.reshape(n, -1).abs().amax(1)
            ok = span > tol
            scaled = (img - lo[:, None, None]) / torch.where(ok, span, torch.ones_like(span))[:, None, None]
            img = torch.where(ok[:, None, None], scaled, torch.zeros_like(img))
        return img.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        views = []
        for view in s.views:
            img = _orient(self._method(x, view))
            if s.mask_striatum:
                r0, r1, c0, c1 = s.crop_box[view]
                if s.mask_mode == "crop":
                    img = img[..., r0:r1, c0:c1]
                else:
                    keep = torch.zeros(img.shape[-2:], dtype=img.dtype)
                    keep[r0:r1, c0:c1] = 1
                    img = img * keep
            if tuple(img.shape[-2:]) != tuple(self.size):
                img = F.interpolate(img, size=tuple(int(v) for v in self.size), mode="bilinear", align_corners=False, antialias=True)
            views.append(img)
        return torch.stack(views, 1) if s.multiview else torch.cat(views, 1)
