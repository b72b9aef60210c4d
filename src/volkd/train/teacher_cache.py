"""The frozen teacher's embeddings and logits for every scan, computed ONCE and reused.

The teacher sees the cohort's volumes normalised with ITS OWN stored normaliser, in eval
mode, without augmentation or gradients. The cache is a tensor file keyed by the teacher
checkpoint's SHA-256 and the cohort fingerprint; rows are indexed by the cohort scan index.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from volkd.atomic import atomic_file
from volkd.data.cohort import Cohort
from volkd.errors import VolkdError
from volkd.train.checkpoint import Checkpoint
from volkd.train.data import normalized_volumes
from volkd.train.loop import TeacherOutputs

CACHE_FORMAT = "volkd-teacher-cache"


class TeacherCacheError(VolkdError):
    """A teacher cache file is unreadable or belongs to another teacher/cohort."""


def cache_key(teacher_hash: str, cohort_fingerprint: str) -> str:
    """Identifies a cache: first 16 hex of the teacher hash and of the cohort fingerprint."""
    return f"{teacher_hash[:16]}-{cohort_fingerprint[:16]}"


@torch.no_grad()
def compute_teacher_outputs(teacher: Checkpoint, cohort: Cohort, batch_size: int = 16, device: str = "cpu",
                            model: torch.nn.Module | None = None) -> TeacherOutputs:
    """Run the teacher once over every scan (chunks streamed from the memmap)."""
    net = (model if model is not None else teacher.build_model()).to(device).eval()
    norm = teacher.build_normalizer()
    embs, logits = [], []
    for i in range(0, len(cohort), batch_size):
        idx = np.arange(i, min(i + batch_size, len(cohort)))
        x = torch.from_numpy(normalized_volumes(cohort.volumes, norm, idx))[:, None].to(device)
        z, e = net(x)
        logits.append(z.float().cpu())
        embs.append(e.float().cpu())
    return TeacherOutputs(torch.cat(embs), torch.cat(logits))


def save_cache(path: str | Path, outputs: TeacherOutputs, key: str) -> Path:
    """Write the cache atomically (tensors + key)."""
    buf = io.BytesIO()
    torch.save({"format": CACHE_FORMAT, "key": key, "embeddings": outputs.embeddings, "logits": outputs.logits}, buf)
    with atomic_file(path, force=True, mode="wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


def load_cache(path: str | Path, key: str, n_scans: int) -> TeacherOutputs | None:
    """The cached outputs if ``path`` holds the cache for ``key`` (else None; corrupt → error)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise TeacherCacheError(f"{path}: unreadable teacher cache ({type(e).__name__}); delete it to recompute") from None
    if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT:
        raise TeacherCacheError(f"{path}: not a volkd teacher cache; delete it to recompute")
    if raw.get("key") != key:
        return None
    out = TeacherOutputs(raw["embeddings"], raw["logits"])
    if len(out.embeddings) != n_scans or len(out.logits) != n_scans:
        raise TeacherCacheError(f"{path}: cache has {len(out.embeddings)} rows but the cohort has {n_scans} scans; delete it to recompute")
    return out


def teacher_outputs(teacher: Checkpoint, teacher_hash: str, cohort: Cohort, cohort_fingerprint: str,
                    paths: list[Path], batch_size: int = 16, device: str = "cpu", write: bool = True) -> tuple[TeacherOutputs, bool]:
    """Load the cache from the first of ``paths`` that holds it, else compute it and write it to
    all of them. Returns ``(outputs, computed)``."""
    key = cache_key(teacher_hash, cohort_fingerprint)
    for p in paths:
        hit = load_cache(p, key, len(cohort))
        if hit is not None:
            return hit, False
    out = compute_teacher_outputs(teacher, cohort, batch_size=batch_size, device=device)
    if write:
        for p in paths:
            save_cache(p, out, key)
    return out, True
