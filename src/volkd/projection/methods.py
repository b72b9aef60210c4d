"""Projection methods: pure functions from a batch of volumes to one view's 2D images.

Every method takes ``block`` (n×X×Y×Z, any float array, memory-mapped or not), the
volume ``axis`` it reads along (0 = sagittal, 1 = coronal, 2 = axial) and keyword
parameters, and returns float32 ``n×C×U×V`` where ``U, V`` are the two remaining volume
axes in increasing order (orientation for display is applied by :func:`orient`).
Methods are looked up by name in :data:`METHODS`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from volkd.errors import ConfigError

#: Number of grey levels of the entropy method's quantisation (8 bits).
N_LEVELS = 256
#: Environment variable choosing the entropy kernels: ``auto`` (default), ``numpy`` or ``numba``.
ENTROPY_BACKEND_ENV = "VOLKD_ENTROPY_BACKEND"
ENTROPY_BACKENDS = ("auto", "numpy", "numba")


@dataclass(frozen=True)
class Method:
    """A registered projection method."""

    name: str
    fn: Callable[..., np.ndarray]
    needs_reference: bool  # reads slices around ``ref`` rather than the whole axis
    doc: str

    def channels(self, epsilon: int) -> int:
        """Channels of the method's output image."""
        return 2 * epsilon + 1 if self.name == "slices" else 1


METHODS: dict[str, Method] = {}


def register(name: str, needs_reference: bool, doc: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator adding a projection function to :data:`METHODS` under ``name``."""

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        METHODS[name] = Method(name, fn, needs_reference, doc)
        return fn

    return deco


def get_method(name: str) -> Method:
    """The registered method ``name`` (``KeyError`` if unknown; specs validate names first)."""
    return METHODS[name]


# ----------------------------------------------------------------------------- helpers
def _f32(block: np.ndarray) -> np.ndarray:
    return np.asarray(block, dtype=np.float32)


def _chan(img: np.ndarray) -> np.ndarray:
    """n×U×V → n×1×U×V float32."""
    return np.ascontiguousarray(img[:, None], dtype=np.float32)


def weighted_sum(block: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Σ_t w_t · slice_t along volume ``axis``; ``weights`` is (T,) or per volume (n, T).

    Returns n×U×V float32. Uses BLAS matrix products on reshaped views (no copies
    for contiguous input).
    """
    block = np.ascontiguousarray(block, dtype=np.float32)
    n, shape = block.shape[0], block.shape[1:]
    t = shape[axis]
    a = math.prod(shape[:axis])
    b = math.prod(shape[axis + 1:])
    w = np.broadcast_to(np.asarray(weights, dtype=np.float32), (n, t))
    rest = tuple(s for i, s in enumerate(shape) if i != axis)
    if b == 1:  # reading along the last axis: (n, A, T) @ (n, T, 1)
        out = block.reshape(n, a, t) @ w[:, :, None]
    elif a == 1:  # first axis: (n, 1, T) @ (n, T, B)
        out = w[:, None, :] @ block.reshape(n, t, b)
    else:  # middle axis: (n, 1, 1, T) @ (n, A, T, B)
        out = w[:, None, None, :] @ block.reshape(n, a, t, b)
    return out.reshape((n,) + rest)


# ----------------------------------------------------------------------------- methods
def _take(block: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * 4
    index[axis + 1] = slice(start, stop)
    # basic slicing: on a memmap only the slices read are touched
    return np.moveaxis(_f32(block[tuple(index)]), axis + 1, 1)


@register("slice", needs_reference=True, doc="the reference slice c (1 channel)")
def slice_image(block: np.ndarray, axis: int, *, ref: int, **_: object) -> np.ndarray:
    """The slice at index ``ref`` along ``axis``: n×1×U×V."""
    return np.ascontiguousarray(_take(block, axis, ref, ref + 1))


@register("slices", needs_reference=True, doc="slices c−ε … c+ε as 2ε+1 channels (2D+ε)")
def slices_image(block: np.ndarray, axis: int, *, ref: int, epsilon: int = 1, **_: object) -> np.ndarray:
    """Slices ``ref−ε … ref+ε`` (ascending index) as channels: n×(2ε+1)×U×V."""
    return np.ascontiguousarray(_take(block, axis, ref - epsilon, ref + epsilon + 1))


@register("mip", needs_reference=False, doc="maximum intensity projection over the axis")
def mip_image(block: np.ndarray, axis: int, **_: object) -> np.ndarray:
    """Maximum over ``axis``: n×1×U×V."""
    return _chan(_f32(block).max(axis=axis + 1))


@register("mean", needs_reference=False, doc="mean over the axis")
def mean_image(block: np.ndarray, axis: int, **_: object) -> np.ndarray:
    """Mean over ``axis``: n×1×U×V."""
    b = _f32(block)
    return _chan(weighted_sum(b, np.full(b.shape[axis + 1], 1.0 / b.shape[axis + 1], dtype=np.float32), axis))


@register("std", needs_reference=False, doc="standard deviation over the axis (population, ddof=0)")
def std_image(block: np.ndarray, axis: int, **_: object) -> np.ndarray:
    """Population standard deviation (ddof=0) over ``axis``: n×1×U×V."""
    b = _f32(block)
    t = b.shape[axis + 1]
    mean = weighted_sum(b, np.full(t, 1.0 / t, dtype=np.float32), axis)
    dev = b - np.expand_dims(mean, axis + 1)
    np.square(dev, out=dev)
    var = weighted_sum(dev, np.full(t, 1.0 / t, dtype=np.float32), axis)
    return _chan(np.sqrt(np.maximum(var, 0.0, out=var), out=var))


def quantize_uint8(block: np.ndarray) -> np.ndarray:
    """8-bit grey levels per volume: ``min(floor((v − min)·256 / (max − min)), 255)``.

    ``min``/``max`` are each volume's own (float32 arithmetic); a constant volume maps to 0.
    Returns uint8 with ``block``'s shape.
    """
    b = _f32(block)
    n = b.shape[0]
    flat = b.reshape(n, -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    span = hi - lo
    scale = np.where(span > 0, np.float32(N_LEVELS) / np.where(span > 0, span, 1), 0).astype(np.float32)
    q = b - lo.reshape((n, 1, 1, 1))
    q *= scale.reshape((n, 1, 1, 1))
    np.minimum(q, N_LEVELS - 1, out=q)
    return q.astype(np.uint8)


@lru_cache(maxsize=16)
def xlogx_table(n: int) -> np.ndarray:
    """``c·log2 c`` for c = 0…n (float64; 0 for c = 0); shared by both entropy backends — do not modify."""
    c = np.arange(n + 1, dtype=np.float64)
    return c * np.log2(np.maximum(c, 1.0))


@lru_cache(maxsize=1)
def _numba_kernels() -> ModuleType | None:
    try:
        # optional dependency (the `volkd[fast]` extra), imported on first use: numba is slow to import
        from volkd.projection import entropy_numba
    except ImportError:
        return None
    except Exception as e:  # noqa: BLE001 - an installed but unusable numba (e.g. no writable cache dir)
        warnings.warn(f"numba is installed but its entropy kernels failed to load ({type(e).__name__}: {e}); "
                      "using the numpy kernels (same results, slower)", RuntimeWarning, stacklevel=2)
        return None
    return entropy_numba


def entropy_backend(backend: str | None = None) -> str:
    """The entropy kernels that run: ``numba`` when installed (``pip install 'volkd[fast]'``), else
    ``numpy``. ``backend`` (or ``$VOLKD_ENTROPY_BACKEND``) = ``auto`` | ``numpy`` | ``numba`` overrides;
    both give bit-identical results."""
    choice = backend or os.environ.get(ENTROPY_BACKEND_ENV) or "auto"
    if choice not in ENTROPY_BACKENDS:
        raise ConfigError(f"entropy backend {choice!r} (argument or ${ENTROPY_BACKEND_ENV}) unknown; choose one of {', '.join(ENTROPY_BACKENDS)}")
    if choice == "numpy":
        return "numpy"
    if _numba_kernels() is None:
        if choice == "numba":
            raise ConfigError(f"entropy backend 'numba' asked for (argument or ${ENTROPY_BACKEND_ENV}) but numba is not "
                              "installed; pip install 'volkd[fast]' or use 'auto'")
        return "numpy"
    return "numba"


def _numba_volume_entropy(shape: tuple[int, ...], axis: int) -> object:
    """The numba per-volume kernel for volumes of ``shape`` along ``axis`` (numba installed)."""
    pixels = math.prod(shape) // shape[axis]
    return _numba_kernels().VolumeEntropy(shape, axis, xlogx_table(pixels))  # type: ignore[union-attr]


def slice_entropies(block: np.ndarray, axis: int, *, backend: str | None = None) -> np.ndarray:
    """Shannon entropy (bits) of each slice's 8-bit grey-level histogram: (n, T) float64.

    Same quantisation as :func:`quantize_uint8`. Compiled kernels when numba is installed
    (:mod:`volkd.projection.entropy_numba`), else numpy; see :func:`entropy_backend`.
    """
    if entropy_backend(backend) == "numpy":
        return _slice_entropies_numpy(block, axis)
    kernel = _numba_volume_entropy(tuple(block.shape[1:]), axis)
    out = np.empty((block.shape[0], block.shape[axis + 1]), dtype=np.float64)
    for i in range(block.shape[0]):
        v = np.ascontiguousarray(block[i], dtype=np.float32)
        if not kernel(v, out[i]):
            out[i] = _slice_entropies_numpy(v[None], axis)[0]
    return out


def _slice_entropies_numpy(block: np.ndarray, axis: int) -> np.ndarray:
    """The numpy kernels of :func:`slice_entropies`.

    Per volume, one ``np.bincount`` counts every slice's histogram at once: a voxel of slice t
    and level k goes to bin t·257 + k (level 256, reached only by the volume maximum, is then
    merged into 255). Buffers are reused across volumes; H_t = log2 P − Σ_k c_k log2 c_k / P
    from a c·log2 c table.
    """
    n, shape = block.shape[0], tuple(block.shape[1:])
    t = shape[axis]
    pixels = int(np.prod(shape, dtype=np.int64)) // t
    stride = N_LEVELS + 1
    key_dtype = np.uint16 if t * stride <= np.iinfo(np.uint16).max else np.intp
    off_shape = [1, 1, 1]
    off_shape[axis] = t
    offsets = (np.arange(t, dtype=np.int64) * stride).astype(key_dtype).reshape(off_shape)
    x = np.empty(shape, dtype=np.float32)
    keys = np.empty(shape, dtype=key_dtype)
    xlogx = xlogx_table(pixels)
    out = np.empty((n, t), dtype=np.float64)
    for i in range(n):
        v = np.asarray(block[i], dtype=np.float32)
        lo, hi = v.min(), v.max()
        span = hi - lo
        scale = np.float32(N_LEVELS) / span if span > 0 else np.float32(0)
        np.subtract(v, lo, out=x)
        x *= scale
        np.copyto(keys, x, casting="unsafe")  # truncation = floor, as x ≥ 0
        keys += offsets
        counts = np.bincount(keys.ravel(), minlength=t * stride).reshape(t, stride)
        counts[:, N_LEVELS - 1] += counts[:, N_LEVELS]
        out[i] = np.log2(pixels) - xlogx[counts[:, :N_LEVELS]].sum(axis=1) / pixels
    return np.maximum(out, 0.0)


def _entropy_weights(h: np.ndarray) -> np.ndarray:
    """H_t / Σ_t H_t per row of ``h`` (n, T); 1/T where every H_t is 0."""
    total = h.sum(axis=1, keepdims=True)
    if total.shape[0] == 1:  # one volume (the numba path): the same values with less numpy overhead
        return h / total if total[0, 0] > 0 else np.full_like(h, 1.0 / h.shape[1])
    return np.where(total > 0, h / np.where(total > 0, total, 1.0), 1.0 / h.shape[1])


@register("entropy", needs_reference=False, doc="mean of slices weighted by each slice's Shannon entropy")
def entropy_image(block: np.ndarray, axis: int, *, backend: str | None = None, **_: object) -> np.ndarray:
    """Σ_t H_t·slice_t / Σ_t H_t with H_t the entropy of slice t's 8-bit histogram: n×1×U×V.

    When every slice has zero entropy (a constant volume) the plain mean is returned. With
    numba, each volume is weighted right after its histograms, while it is still in cache.
    """
    b = _f32(block)
    if entropy_backend(backend) == "numpy":
        return _chan(weighted_sum(b, _entropy_weights(_slice_entropies_numpy(b, axis)), axis))
    kernel = _numba_volume_entropy(tuple(b.shape[1:]), axis)
    out = np.empty((b.shape[0],) + tuple(s for i, s in enumerate(b.shape[1:]) if i != axis), dtype=np.float32)
    h = np.empty((1, b.shape[axis + 1]), dtype=np.float64)
    for i in range(b.shape[0]):
        v = np.ascontiguousarray(b[i])
        if not kernel(v, h[0]):
            h[:] = _slice_entropies_numpy(v[None], axis)
        out[i] = weighted_sum(v[None], _entropy_weights(h), axis)[0]
    return _chan(out)


def rank_pool_weights(t: int) -> np.ndarray:
    """Approximate rank-pooling weights α_1…α_T = Σ_{i=t..T} (2i − T − 1)/i (Bilen et al. 2016)."""
    i = np.arange(1, t + 1, dtype=np.float64)
    terms = (2 * i - t - 1) / i
    return np.cumsum(terms[::-1])[::-1]


@register("dynamic", needs_reference=False, doc="dynamic image Σ_t α_t·slice_t (approximate rank pooling)")
def dynamic_image(block: np.ndarray, axis: int, *, minmax: bool = True, **_: object) -> np.ndarray:
    """Dynamic image along ``axis`` (slice t = index t−1), min-max scaled to [0, 1] per image if ``minmax``."""
    b = _f32(block)
    alpha = rank_pool_weights(b.shape[axis + 1])
    img = weighted_sum(b, alpha.astype(np.float32), axis)
    if minmax:
        n = img.shape[0]
        flat = img.reshape(n, -1)
        lo = flat.min(axis=1)
        span = flat.max(axis=1) - lo
        # below float32 round-off of Σ α_t·slice_t the image is zero (e.g. constant along the axis)
        vflat = b.reshape(n, -1)
        magnitude = np.maximum(np.abs(vflat.min(axis=1)), np.abs(vflat.max(axis=1)))
        tol = 8 * len(alpha) * np.finfo(np.float32).eps * np.abs(alpha).sum() * magnitude
        ok = span > tol
        img = np.where(ok[:, None, None], (img - lo[:, None, None]) / np.where(ok, span, 1)[:, None, None], 0).astype(np.float32)
    return _chan(img)


# ----------------------------------------------------------------------------- orientation
def orient(images: np.ndarray) -> np.ndarray:
    """Display orientation of ``…×U×V`` images: rows = V reversed, columns = U.

    Axial (U=x, V=y): anterior up, patient left on the image's left; coronal (U=x, V=z)
    and sagittal (U=y, V=z): superior up (sagittal: anterior on the right).
    """
    return np.swapaxes(images, -1, -2)[..., ::-1, :]


def unorient(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`orient`: displayed ``…×H×W`` back to volume-axis order ``…×U×V``."""
    return np.swapaxes(images[..., ::-1, :], -1, -2)
