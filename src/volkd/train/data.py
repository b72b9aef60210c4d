"""In-memory training tensors, per-epoch batch order, class weights and augmentation.

Everything random here is drawn from generators seeded by ``(seed, epoch, batch)``, so an
epoch's batches and augmentations do not depend on what ran before (resume-safe) nor on the
number of processes (a global batch is drawn once, then sharded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from volkd.errors import ConfigError
from volkd.train.config import AugmentConfig


@dataclass
class ArrayData:
    """Inputs ``x`` (N, ...), integer labels ``y`` (N,) and the cohort scan index of each row."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.index)):
            raise ValueError(f"ArrayData: x, y, index lengths differ ({len(self.x)}, {len(self.y)}, {len(self.index)})")

    def __len__(self) -> int:
        return int(self.x.shape[0])


def normalized_volumes(volumes: np.ndarray, normalizer: Any, indices: np.ndarray, chunk: int = 32) -> np.ndarray:
    """``normalizer.transform`` applied to ``volumes[indices]`` in chunks (reads a memmap lazily)."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices), *volumes.shape[1:]), dtype=np.float32)
    for i in range(0, len(indices), chunk):
        sel = indices[i:i + chunk]
        out[i:i + len(sel)] = normalizer.transform(np.asarray(volumes[sel], dtype=np.float32))
    return out


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (e.g. seed, epoch, batch)."""
    ss = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys])
    g = torch.Generator()
    g.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


def class_weights(y: np.ndarray, n_classes: int, where: str = "training partition") -> torch.Tensor:
    """Inverse-frequency weights ``n / (K · n_c)`` (mean weight over training scans = 1)."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        empty = [int(c) for c in np.flatnonzero(counts == 0)]
        raise ConfigError(f"{where}: class index(es) {empty} have no training scan; a classifier cannot learn them (check the split)")
    return torch.tensor(len(y) / (n_classes * counts), dtype=torch.float32)


def epoch_order(y: torch.Tensor, seed: int, epoch: int, balanced_sampler: bool = False) -> torch.Tensor:
    """Positions of the training rows for one epoch: a shuffle, or a class-balanced draw with replacement."""
    g = seeded_generator(seed, 0xE90C, epoch)
    n = len(y)
    if not balanced_sampler:
        return torch.randperm(n, generator=g)
    counts = torch.bincount(y)
    w = (1.0 / counts.double())[y]
    return torch.multinomial(w, n, replacement=True, generator=g)


def global_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an epoch's order into global batches; a trailing batch of one scan is dropped
    (batch statistics and relational losses need two)."""
    batches = list(torch.split(order, batch_size))
    if batches and len(batches[-1]) < 2:
        batches = batches[:-1]
    return batches


# ------------------------------------------------------------------ augmentation
def sample_augment_params(n: int, spatial_dims: int, cfg: AugmentConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample random parameters for a batch of ``n`` (drawn for the GLOBAL batch)."""
    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) * 2 - 1

    n_rot = 3 if spatial_dims == 3 else 1
    return {
        "rot": u(n, n_rot) * math.radians(cfg.rotate_deg),
        "shift": u(n, spatial_dims) * cfg.translate_frac * 2,  # affine_grid spans [-1, 1]
        "zoom": 1 + u(n, 1) * cfg.scale_frac,
        "iscale": 1 + u(n) * cfg.intensity_scale,
        "ishift": u(n) * cfg.intensity_shift,
        "flip": (torch.rand(n, generator=g) < 0.5) & torch.tensor(cfg.flip_lr),
        "noise_seed": torch.randint(0, 2**31 - 1, (n,), generator=g),
        "noise_std": torch.tensor(float(cfg.noise_std)),
    }


def _rotation(rot: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Rotation matrices (n, d, d) from angles (about each axis in 3D, in-plane in 2D)."""
    c, s = torch.cos(rot), torch.sin(rot)
    n = rot.shape[0]
    if spatial_dims == 2:
        return torch.stack([torch.stack([c[:, 0], -s[:, 0]], -1), torch.stack([s[:, 0], c[:, 0]], -1)], 1)
    one, zero = torch.ones(n), torch.zeros(n)
    rx = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, c[:, 0], -s[:, 0]], -1), torch.stack([zero, s[:, 0], c[:, 0]], -1)], 1)
    ry = torch.stack([torch.stack([c[:, 1], zero, s[:, 1]], -1), torch.stack([zero, one, zero], -1), torch.stack([-s[:, 1], zero, c[:, 1]], -1)], 1)
    rz = torch.stack([torch.stack([c[:, 2], -s[:, 2], zero], -1), torch.stack([s[:, 2], c[:, 2], zero], -1), torch.stack([zero, zero, one], -1)], 1)
    return rz @ ry @ rx


def apply_augment(x: torch.Tensor, params: dict[str, torch.Tensor], spatial_dims: int) -> torch.Tensor:
    """Small random affine (rotation, zoom, shift), optional L-R flip, intensity scale/shift, noise.

    ``x`` is ``(B, C, *spatial)`` or, for multi-view students, ``(B, V, C, H, W)``: every view
    of a sample gets that sample's parameters and its noise (the views are warped together, as
    channels, with one sampling grid). Batched with ``affine_grid``/``grid_sample``, on ``x``'s
    device; the parameters and the noise are drawn on the CPU (same numbers on every device).
    """
    multiview = x.dim() == spatial_dims + 3
    b = x.shape[0]
    shape = x.shape
    if multiview:  # (B, V, C, H, W) → (B, V·C, H, W): one grid per sample serves all its views
        x = x.reshape(b, shape[1] * shape[2], *shape[3:])
    theta = _rotation(params["rot"], spatial_dims) / params["zoom"].view(b, 1, 1)
    if params["flip"].any():
        # the first spatial axis (volume axis 0 = x, left→right) is the LAST coordinate of affine_grid's order
        sign = torch.ones(b, spatial_dims)
        sign[params["flip"], -1] = -1.0
        theta = theta * sign.view(b, 1, spatial_dims)
    aff = torch.cat([theta, params["shift"].view(b, spatial_dims, 1)], 2).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(aff, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bshape = (b,) + (1,) * (x.dim() - 1)
    out = out * params["iscale"].view(bshape).to(out) + params["ishift"].view(bshape).to(out)
    out = out.reshape(shape)
    std = float(params["noise_std"])
    if std == 0:
        return out
    noise = sample_noise(params["noise_seed"], shape[2:] if multiview else shape[1:])
    if multiview:
        noise = noise.unsqueeze(1)  # the same noise on every view
    return out + noise.to(device=out.device, dtype=out.dtype, non_blocking=True) * std


def sample_noise(seeds: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Standard normal noise of ``shape`` per sample, sample ``i`` from its own seed (so a
    sample's noise does not depend on its batch or shard); one generator, reseeded."""
    g = torch.Generator()
    noise = torch.empty((len(seeds), *shape))
    for i, s in enumerate(seeds.tolist()):
        g.manual_seed(s)
        torch.randn(tuple(shape), generator=g, out=noise[i])
    return noise
