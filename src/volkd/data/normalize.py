"""Intensity normalisation: statistics fit on the training scans only, applied to any batch.

``zscore`` (the study's) standardises each voxel with the mean and sd of that voxel over
the training scans; ``global_zscore`` uses one mean and sd over all training voxels;
``reference`` divides each scan by the mean of its occipital reference region (the
SBR-style normalisation of clinical DaTscan quantification); ``none`` passes volumes
through. Fitting streams over a (memory-mapped) ``N×D×H×W`` array in chunks, accumulating
in float64 (Chan et al.'s pairwise update of mean and sum of squares), so the volumes are
never all in memory. ``state_dict()`` / :meth:`Normalizer.from_state` round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from volkd.data.atlas import occipital_mask
from volkd.errors import ConfigError, VolkdError

DEFAULT_CHUNK = 16
#: Where a user chooses the normaliser (named in error messages).
NORMALIZER_HINT = "`training.extra.normalizer: zscore` in a study config, `--normalizer zscore` for volkd train-teacher/-student"


class NormalizationError(VolkdError):
    """A scan cannot be normalised (e.g. a non-positive reference-region mean)."""


def _indices(volumes: np.ndarray, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
    n = volumes.shape[0]
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) == 0:
        raise ConfigError("normaliser fit: no training scans given (indices is empty)")
    if idx.min() < 0 or idx.max() >= n:
        raise ConfigError(f"normaliser fit: indices out of range [0, {n})")
    return idx


def _chunks(volumes: np.ndarray, idx: np.ndarray, chunk: int):
    """Yield float64 blocks of ``volumes[idx]`` (sorted reads, ``chunk`` scans at a time)."""
    idx = np.sort(idx)
    for i in range(0, len(idx), chunk):
        yield np.asarray(volumes[idx[i:i + chunk]], dtype=np.float64)


def _check_volumes(volumes: np.ndarray, where: str) -> None:
    if volumes.ndim != 4:
        raise ConfigError(f"{where}: expected a batch of volumes N×D×H×W, got shape {volumes.shape}")


class Normalizer:
    """Base class: ``fit(volumes, indices) -> self``, ``transform(volumes)``, state round-trip."""

    name: ClassVar[str] = ""
    fitted: bool = False

    def fit(self, volumes: np.ndarray, indices: Sequence[int] | np.ndarray | None = None,
            chunk: int = DEFAULT_CHUNK) -> "Normalizer":
        """Fit statistics on ``volumes[indices]`` (the training scans), streaming in chunks."""
        raise NotImplementedError

    def transform(self, volumes: np.ndarray, scan_ids: Sequence[str] | None = None) -> np.ndarray:
        """Normalise a batch ``N×D×H×W``; returns float32."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this normaliser (JSON values or numpy arrays)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Normalizer":
        """Rebuild a normaliser from :meth:`state_dict` output (dispatching on ``state['name']``)."""
        if not isinstance(state, dict) or "name" not in state:
            raise ConfigError("normaliser state: expected a dict with a 'name' key (from state_dict())")
        name = state["name"]
        if name not in NORMALIZERS:
            raise ConfigError(f"normaliser state: unknown name {name!r}; known: {sorted(NORMALIZERS)}")
        return NORMALIZERS[name]._from_state(state)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> "Normalizer":
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(f"normaliser {self.name!r}: call fit() on the training scans before transform()")


def _state_get(state: dict[str, Any], key: str) -> Any:
    if key not in state:
        raise ConfigError(f"normaliser state {state.get('name')!r}: missing key {key!r}")
    return state[key]


class NoNormalizer(Normalizer):
    """Identity (volumes cast to float32)."""

    name = "none"

    def __init__(self) -> None:
        self.fitted = True

    def fit(self, volumes, indices=None, chunk=DEFAULT_CHUNK):
        return self

    def transform(self, volumes, scan_ids=None):
        return np.asarray(volumes, dtype=np.float32)

    def state_dict(self):
        return {"name": self.name}

    @classmethod
    def _from_state(cls, state):
        return cls()


class ZScoreNormalizer(Normalizer):
    """Voxel-wise z-score with training-set mean and sd per voxel (the study's).

    Voxel sds below ``min_std`` × (pooled sd of all training voxels) are raised to that
    floor, so near-constant voxels outside the head are not blown up.
    """

    name = "zscore"

    def __init__(self, min_std: float = 0.05) -> None:
        if not min_std > 0:
            raise ConfigError(f"zscore: min_std must be > 0 (a fraction of the pooled sd), got {min_std}")
        self.min_std = float(min_std)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.n = 0
        self.fitted = False

    def fit(self, volumes, indices=None, chunk=DEFAULT_CHUNK):
        _check_volumes(volumes, "zscore fit")
        idx = _indices(volumes, indices)
        n, mean, m2 = 0, np.zeros(volumes.shape[1:]), np.zeros(volumes.shape[1:])
        for block in _chunks(volumes, idx, chunk):
            nb = block.shape[0]
            mb = block.mean(axis=0)
            m2b = ((block - mb) ** 2).sum(axis=0)
            delta = mb - mean
            tot = n + nb
            mean += delta * (nb / tot)
            m2 += m2b + delta**2 * (n * nb / tot)
            n = tot
        var = m2 / n  # population variance over the training scans
        # pooled sd over all training voxels: within-voxel + between-voxel variance
        pooled = float(np.sqrt(var.mean() + mean.var()))
        floor = max(self.min_std * pooled, np.finfo(np.float32).tiny)
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(np.sqrt(var), floor).astype(np.float32)
        self.n, self.fitted = int(n), True
        return self

    def transform(self, volumes, scan_ids=None):
        self._require_fitted()
        _check_volumes(volumes, "zscore transform")
        if tuple(volumes.shape[1:]) != tuple(self.mean.shape):
            raise ConfigError(f"zscore: fitted on grid {self.mean.shape}, got volumes of grid {tuple(volumes.shape[1:])}")
        return ((np.asarray(volumes, dtype=np.float32) - self.mean) / self.std).astype(np.float32, copy=False)

    def state_dict(self):
        self._require_fitted()
        return {"name": self.name, "min_std": self.min_std, "n": self.n, "mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def _from_state(cls, state):
        obj = cls(min_std=float(_state_get(state, "min_std")))
        obj.mean = np.asarray(_state_get(state, "mean"), dtype=np.float32)
        obj.std = np.asarray(_state_get(state, "std"), dtype=np.float32)
        if obj.mean.shape != obj.std.shape or obj.mean.ndim != 3:
            raise ConfigError("normaliser state 'zscore': mean and std must be 3-D arrays of the same shape")
        obj.n, obj.fitted = int(state.get("n", 0)), True
        return obj


class GlobalZScoreNormalizer(Normalizer):
    """One mean and sd computed over every voxel of every training scan."""

    name = "global_zscore"

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0
        self.n = 0
        self.fitted = False

    def fit(self, volumes, indices=None, chunk=DEFAULT_CHUNK):
        _check_volumes(volumes, "global_zscore fit")
        idx = _indices(volumes, indices)
        n, mean, m2 = 0, 0.0, 0.0
        for block in _chunks(volumes, idx, chunk):
            nb = block.size
            mb = float(block.mean())
            m2b = float(((block - mb) ** 2).sum())
            delta = mb - mean
            tot = n + nb
            mean += delta * nb / tot
            m2 += m2b + delta**2 * n * nb / tot
            n = tot
        sd = float(np.sqrt(m2 / n))
        if sd <= 0:
            raise NormalizationError("global_zscore: the training scans are constant (sd 0); nothing to normalise")
        self.mean, self.std, self.n, self.fitted = mean, sd, int(idx.size), True
        return self

    def transform(self, volumes, scan_ids=None):
        self._require_fitted()
        _check_volumes(volumes, "global_zscore transform")
        return ((np.asarray(volumes, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32, copy=False)

    def state_dict(self):
        self._require_fitted()
        return {"name": self.name, "n": self.n, "mean": self.mean, "std": self.std}

    @classmethod
    def _from_state(cls, state):
        obj = cls()
        obj.mean, obj.std = float(_state_get(state, "mean")), float(_state_get(state, "std"))
        obj.n, obj.fitted = int(state.get("n", 0)), True
        return obj


class ReferenceNormalizer(Normalizer):
    """Divide each scan by its mean over a reference region (default: AAL3 occipital cortex).

    The region comes from ``mask`` (boolean D×H×W, for non-MNI data) or from
    :func:`volkd.data.atlas.occipital_mask` on the volumes' grid with ``affine`` (MNI).
    Pass ``space=cohort.meta.space`` to refuse a non-MNI cohort without a mask.
    Nothing is learnt from the training scans; the reference mean is per scan.
    """

    name = "reference"

    def __init__(self, mask: np.ndarray | None = None, affine: np.ndarray | list | None = None,
                 space: str | None = None) -> None:
        if mask is None and space is not None and space != "MNI":
            raise ConfigError(
                f"reference normalisation: the cohort is in space {space!r}, not MNI, so the atlas occipital region "
                f"does not apply; use normalizer zscore ({NORMALIZER_HINT}) or pass an explicit reference mask"
            )
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        if self.mask is not None and (self.mask.ndim != 3 or not self.mask.any()):
            raise ConfigError("reference: mask must be a non-empty boolean D×H×W array")
        self.affine = None if affine is None else np.asarray(affine, dtype=np.float64)
        self.fitted = True

    def _mask_for(self, grid: tuple[int, ...]) -> np.ndarray:
        if self.mask is None:
            self.mask = np.asarray(occipital_mask(tuple(grid), self.affine), dtype=bool)
        if tuple(self.mask.shape) != tuple(grid):
            raise ConfigError(f"reference: mask has grid {self.mask.shape} but volumes have grid {tuple(grid)}")
        return self.mask

    def reference_means(self, volumes: np.ndarray) -> np.ndarray:
        """Mean of each scan over the reference region (float64, length N)."""
        _check_volumes(volumes, "reference")
        mask = self._mask_for(volumes.shape[1:])
        return np.asarray(volumes, dtype=np.float32)[:, mask].astype(np.float64).mean(axis=1)

    def fit(self, volumes, indices=None, chunk=DEFAULT_CHUNK):
        _check_volumes(volumes, "reference fit")
        idx = np.sort(_indices(volumes, indices))
        for i in range(0, len(idx), chunk):
            self._checked_means(np.asarray(volumes[idx[i:i + chunk]]), [f"training scan index {j}" for j in idx[i:i + chunk]])
        return self

    def _checked_means(self, volumes: np.ndarray, names: Sequence[str]) -> np.ndarray:
        ref = self.reference_means(volumes)
        bad = np.flatnonzero(~(ref > 0))
        if len(bad):
            j = int(bad[0])
            raise NormalizationError(
                f"reference normalisation: {names[j]} has reference-region mean {ref[j]:.4g} ≤ 0; the scan is empty "
                f"or not aligned to the atlas (check its orientation/space, pass an explicit mask, or use normalizer zscore: "
                f"{NORMALIZER_HINT})"
            )
        return ref

    def transform(self, volumes, scan_ids=None):
        _check_volumes(volumes, "reference transform")
        names = [f"scan {s!r}" for s in scan_ids] if scan_ids is not None else [f"batch item {i}" for i in range(volumes.shape[0])]
        ref = self._checked_means(volumes, names)
        return (np.asarray(volumes, dtype=np.float32) / ref.astype(np.float32)[:, None, None, None]).astype(np.float32, copy=False)

    def state_dict(self):
        return {"name": self.name, "mask": None if self.mask is None else self.mask.copy(),
                "affine": None if self.affine is None else self.affine.copy()}

    @classmethod
    def _from_state(cls, state):
        return cls(mask=state.get("mask"), affine=state.get("affine"))


NORMALIZERS: dict[str, type[Normalizer]] = {
    c.name: c for c in (ZScoreNormalizer, GlobalZScoreNormalizer, ReferenceNormalizer, NoNormalizer)
}


def get_normalizer(name: str, **kw: Any) -> Normalizer:
    """A new normaliser by name: ``zscore``, ``global_zscore``, ``reference`` or ``none``."""
    if name not in NORMALIZERS:
        raise ConfigError(f"unknown normalisation {name!r}; choose one of {sorted(NORMALIZERS)}")
    try:
        return NORMALIZERS[name](**kw)
    except TypeError as e:
        raise ConfigError(f"normalisation {name!r}: bad option(s) {sorted(kw)} ({e})") from None


__all__ = [
    "NORMALIZERS", "GlobalZScoreNormalizer", "NoNormalizer", "NormalizationError", "Normalizer",
    "ReferenceNormalizer", "ZScoreNormalizer", "get_normalizer",
]
