"""project(volumes, spec): chunked projection of a volume batch, masking, resizing, fusion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from volkd.data.cohort import VIEW_AXIS
from volkd.errors import ConfigError
from volkd.projection.methods import METHODS, orient
from volkd.projection.spec import MIRRORED_SLOTS, SLOT_VIEW, ProjectionSpec

#: Bytes of input volumes processed per chunk (intermediates are a few times this).
CHUNK_BYTES = 64 * 2**20


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``…×H×W`` float images to ``size`` (bilinear, antialiased when shrinking; torch)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return np.ascontiguousarray(images, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    lead = images.shape[:-2]
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32).reshape((-1, 1) + images.shape[-2:]))
    y = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False, antialias=True)
    return y.numpy().reshape(lead + tuple(size))


def axis_slab(block: np.ndarray, axis: int, first: int | None, stop: int | None, step: int = 1) -> np.ndarray:
    """Slices ``first … stop−1`` (every ``step``) of volume ``axis`` of an n×X×Y×Z block (basic slicing: a view, memmap-friendly)."""
    index = [slice(None)] * 4
    index[axis + 1] = slice(first, stop, step)
    return block[tuple(index)]


def _view_images(block: np.ndarray, spec: ProjectionSpec, slot: str, size: tuple[int, int]) -> np.ndarray:
    """One slot's displayed, masked and resized images: n×C×H×W float32."""
    method = METHODS[spec.method]
    view = SLOT_VIEW[slot]
    axis = VIEW_AXIS[view]
    ref = (spec.ref_index or {}).get(slot)
    rng = (spec.axis_range or {}).get(slot) if spec.needs_axis_range(slot) else None
    if rng is not None:  # a whole-axis method on the slab / hemisphere only
        block = axis_slab(block, axis, int(rng[0]), int(rng[1]))
    if slot in MIRRORED_SLOTS and not method.needs_reference:
        block = axis_slab(block, axis, None, None, step=-1)  # read lateral → medial, like the left hemisphere
    img = method.fn(block, axis, ref=ref, epsilon=spec.epsilon, minmax=spec.dynamic_minmax)
    img = orient(img)
    if spec.mask_striatum:
        r0, r1, c0, c1 = spec.crop_box[view]  # type: ignore[index]  # validated
        if spec.mask_mode == "crop":
            img = img[..., r0:r1, c0:c1]
        else:
            keep = np.zeros(img.shape[-2:], dtype=bool)
            keep[r0:r1, c0:c1] = True
            img = np.where(keep, img, np.float32(0))
    return resize_images(img, size)


def default_chunk(grid_shape: tuple[int, ...]) -> int:
    """Volumes per chunk so one chunk of input is about :data:`CHUNK_BYTES`."""
    per = int(np.prod(grid_shape, dtype=np.int64)) * 4
    return max(1, CHUNK_BYTES // per)


def project(
    volumes: np.ndarray,
    spec: ProjectionSpec,
    *,
    chunk_size: int | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Project N×D×H×W ``volumes`` (memmap fine) with ``spec``: float32 (N,C,H,W), or (N,V,C,H,W) for joint fusion.

    Works chunk by chunk so memory stays bounded; ``out`` may be a preallocated array
    (e.g. a memmap) of the output shape. ``progress(done, total)`` is called per chunk.
    """
    if not isinstance(spec, ProjectionSpec):
        raise ConfigError(f"project: spec must be a ProjectionSpec, got {type(spec).__name__}")
    if getattr(volumes, "ndim", None) != 4:
        raise ConfigError(f"project: volumes must be a 4-D array N×D×H×W, got shape {getattr(volumes, 'shape', None)}")
    grid = tuple(int(g) for g in volumes.shape[1:])
    if spec.grid_shape is not None and tuple(spec.grid_shape) != grid:
        raise ConfigError(f"project: spec was resolved for grid {tuple(spec.grid_shape)} but the volumes have grid {grid}; resolve it for these volumes")
    spec.validate_for(grid)
    n = int(volumes.shape[0])
    shape = (n,) + spec.output_shape(grid)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape or out.dtype != np.float32:
        raise ConfigError(f"project: out must be float32 of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    size = spec.target_size(grid)
    step = chunk_size or default_chunk(grid)
    c = spec.channels_per_view
    for i in range(0, n, step):
        block = volumes[i:i + step]
        for v, slot in enumerate(spec.slots):
            img = _view_images(block, spec, slot, size)
            if spec.multiview:
                out[i:i + step, v] = img
            else:
                out[i:i + step, v * c:(v + 1) * c] = img
        if progress is not None:
            progress(min(i + step, n), n)
    return out
