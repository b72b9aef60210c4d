"""Checkpoints: weights plus everything needed to predict on a new scan, and to resume.

A checkpoint is a ``torch.save`` dict tagged ``format == "volkd-checkpoint"``. Numpy arrays
(normaliser statistics, RNG states) are stored as tensors in a tagged wrapper so that the file
loads with ``torch.load(weights_only=True)`` — no pickled code is ever executed on load.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from volkd.atomic import atomic_file
from volkd.data.normalize import Normalizer
from volkd.errors import VolkdError
from volkd.models import ModelSpec, build_model
from volkd.projection import ProjectionSpec

FORMAT = "volkd-checkpoint"
FORMAT_VERSION = 1
_NDARRAY = "__ndarray__"
#: Keys every checkpoint must carry (``train_state`` only in ``last.pt``).
REQUIRED = (
    "kind", "state_dict", "model_spec", "projection_spec", "normalizer", "class_names", "config",
    "seed", "versions", "cohort_fingerprint", "split", "train_subjects", "teacher_hash", "epoch", "metrics",
)


class CheckpointError(VolkdError):
    """A file is not a volkd checkpoint, is corrupt, or lacks a required field."""


@dataclass
class Checkpoint:
    """A loaded checkpoint (see :data:`REQUIRED` for the fields)."""

    kind: str  # "teacher" | "student"
    state_dict: dict[str, torch.Tensor]
    model_spec: dict[str, Any]
    projection_spec: dict[str, Any] | None
    normalizer: dict[str, Any]  # Normalizer.state_dict() (holds its "name")
    class_names: list[str]
    config: dict[str, Any]
    seed: int
    versions: dict[str, str]
    cohort_fingerprint: str
    split: dict[str, Any]  # {"repeat", "seed", "kind", "train"/"val"/"test": scan ids}
    train_subjects: list[str]
    teacher_hash: str | None
    epoch: int
    metrics: dict[str, float]
    kd: dict[str, Any] | None = None
    train_state: dict[str, Any] | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cohort_meta(self) -> dict[str, Any] | None:
        """The training cohort's ``CohortMeta`` (grid, affine, space, import provenance), if recorded."""
        return self.extra.get("cohort_meta")

    def build_model(self) -> torch.nn.Module:
        """The network with the stored weights, in eval mode."""
        model = build_model(ModelSpec(**self.model_spec))
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: weights do not match the stored model spec ({str(e).splitlines()[0]})") from None
        return model.eval()

    def build_normalizer(self) -> Any:
        """The fitted normaliser stored at training time."""
        return Normalizer.from_state(self.normalizer)

    def build_projection(self) -> Any:
        """The :class:`volkd.projection.ProjectionSpec` (``None`` for a teacher)."""
        if self.projection_spec is None:
            return None
        return ProjectionSpec(**self.projection_spec)


def encode(obj: Any) -> Any:
    """Make ``obj`` loadable with ``weights_only=True`` (numpy arrays/scalars → tagged tensors)."""
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj)).clone(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [encode(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, Path):
        return str(obj)
    return obj


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            return obj[_NDARRAY].numpy().astype(obj.get("dtype", None) or obj[_NDARRAY].numpy().dtype, copy=True)
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [decode(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    return obj


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; ``payload`` must hold every key of :data:`REQUIRED`."""
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: cannot save a checkpoint without {', '.join(missing)}")
    path = Path(path)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION}
    body.update({k: (v if k == "state_dict" else encode(v)) for k, v in payload.items()})
    buf = io.BytesIO()
    torch.save(body, buf)
    with atomic_file(path, force=True, mode="wb") as fh:
        fh.write(buf.getvalue())
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint; a non-volkd or corrupt file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (expected a best.pt/last.pt written by `volkd train-*`)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # never repeat torch's advice to retry with weights_only=False: that runs code from the file
        detail = _unpickler_detail(str(e))
        if "global" in detail.lower():
            raise CheckpointError(f"{path}: not a volkd checkpoint: it holds Python objects, not only tensors and plain data "
                                  f"({detail}); volkd never loads those (that could run code from the file): use a "
                                  "best.pt/last.pt written by `volkd train-*`") from None
        raise CheckpointError(f"{path}: not a readable volkd checkpoint (corrupt, or not a torch file: {detail}); "
                              "use a best.pt/last.pt written by `volkd train-*`") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointError(f"{path}: not a readable volkd checkpoint ({type(e).__name__}: "
                              f"{_unpickler_detail(str(e))})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a volkd checkpoint (no '{FORMAT}' tag); use a best.pt/last.pt written by `volkd train-*`")
    if int(raw.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {raw.get('format_version')} is newer than this volkd understands ({FORMAT_VERSION}); upgrade volkd")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: corrupt volkd checkpoint, missing field(s) {', '.join(missing)}")
    if not isinstance(raw["state_dict"], dict) or not all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values()):
        raise CheckpointError(f"{path}: corrupt volkd checkpoint, 'state_dict' is not a mapping of tensors")
    d = {k: (raw[k] if k == "state_dict" else decode(raw[k])) for k in raw if k not in ("format", "format_version")}
    known = set(Checkpoint.__dataclass_fields__) - {"path", "extra"}
    extra = {k: v for k, v in d.items() if k not in known}
    ck = Checkpoint(**{k: v for k, v in d.items() if k in known}, path=path, extra=extra)
    return ck


def _unpickler_detail(message: str) -> str:
    """The specific reason in a torch.load error (e.g. 'Unsupported global: GLOBAL x.Y'), without torch's advice."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+was not an allowed global|\s+Please |\n|$)", message, re.S)
    text = m.group(1).strip() if m else (message.strip().splitlines() or [""])[0].split(". ")[0].strip()
    if "weights_only" in text:
        text = "the file is not a plain tensor archive"
    return text[:200] or "the file is empty or cut short"


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (identifies a teacher checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
