"""Projected datasets on disk: ``images.npy`` + ``spec.json`` + ``scans.csv`` + ``projection.json`` (+ gallery)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volkd.atomic import atomic_dir, write_json
from volkd.data.cohort import Cohort
from volkd.errors import ConfigError
from volkd.projection.gallery import render_gallery
from volkd.projection.methods import METHODS
from volkd.projection.project import project
from volkd.projection.reference import resolve_reference
from volkd.projection.spec import ProjectionSpec
from volkd.provenance import provenance

IMAGES_FILE, SPEC_FILE, SCANS_FILE, INFO_FILE, GALLERY_FILE = "images.npy", "spec.json", "scans.csv", "projection.json", "gallery.png"


@dataclass
class ProjectedDataset:
    """A projected dataset read back from disk (images memory-mapped)."""

    images: np.ndarray
    spec: ProjectionSpec
    scans: pd.DataFrame
    info: dict[str, Any]
    path: Path


def _cohort_info(cohort: Cohort) -> dict[str, Any]:
    return {
        "cohort": str(cohort.path) if cohort.path else None,
        "cohort_fingerprint": cohort.meta.fingerprint or cohort.fingerprint(),
        "class_names": cohort.class_names,
        "grid_shape": list(cohort.meta.grid_shape),
        "n_scans": len(cohort),
    }


def _sources(cohort: Cohort) -> list[Path]:
    return [cohort.path] if cohort.path is not None else []


def write_projection(
    cohort: Cohort,
    spec: ProjectionSpec,
    out_dir: str | Path,
    *,
    force: bool = False,
    gallery_per_class: int | None = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Project every scan of ``cohort`` with ``spec`` (resolved first) and write the dataset atomically."""
    spec = resolve_reference(spec, cohort)
    out_dir = Path(out_dir)
    shape = (len(cohort),) + spec.output_shape(cohort.meta.grid_shape)
    with atomic_dir(out_dir, force=force, kind="projection", sources=_sources(cohort)) as tmp:
        images = np.lib.format.open_memmap(tmp / IMAGES_FILE, mode="w+", dtype=np.float32, shape=shape)
        project(cohort.volumes, spec, out=images, progress=progress)
        images.flush()
        del images
        write_json(tmp / SPEC_FILE, spec.model_dump(mode="json"))
        cohort.scans.to_csv(tmp / SCANS_FILE, index=False)
        write_json(tmp / INFO_FILE, {**_cohort_info(cohort), "shape": list(shape), "label": spec.label,
                                     "in_channels": spec.in_channels, "n_views": spec.n_views,
                                     "provenance": provenance()})
        if gallery_per_class:
            (tmp / GALLERY_FILE).write_bytes(render_gallery(cohort, [spec], gallery_per_class))
    return out_dir


def all_method_specs(views: list[str], epsilon: int = 1, **fields: Any) -> list[ProjectionSpec]:
    """One spec per registered method on ``views`` (early fusion when several view slots).

    ``ref_mode`` defaults to ``hemispheres`` when ``views`` include the sagittal one, so that every
    panel shows a striatum (a midline sagittal slice falls between the two).
    """
    fields = {"ref_mode": "hemispheres" if "sagittal" in views else "midline", **fields}
    n_slots = len(views) + (1 if fields["ref_mode"] == "hemispheres" else 0)
    fusion = "early" if n_slots > 1 else "none"
    return [ProjectionSpec(method=m, views=views, fusion=fusion, epsilon=epsilon, name=m,
                           **{k: v for k, v in fields.items() if k != "slab" or not METHODS[m].needs_reference}) for m in METHODS]


def write_method_gallery(
    cohort: Cohort, out_dir: str | Path, views: list[str], *, epsilon: int = 1, force: bool = False, per_class: int = 2, **fields: Any
) -> Path:
    """Write ``gallery.png`` of every method on ``views`` (+ the resolved specs) atomically to ``out_dir``."""
    specs = all_method_specs(views, epsilon, **fields)
    # the reference (a mean image for non-MNI cohorts) is computed once per kind: slices (ε-clamped), whole-axis ranges
    ref = resolve_reference(next(s for s in specs if s.method == "slices"), cohort)
    whole = next(s for s in specs if not METHODS[s.method].needs_reference)
    ranges = resolve_reference(whole, cohort).axis_range if any(whole.needs_axis_range(x) for x in whole.slots) else None
    shared = {k: getattr(ref, k) for k in ("ref_index", "grid_shape", "ref_source", "crop_box")}
    specs = [s.replace(**shared, **({"axis_range": ranges} if not METHODS[s.method].needs_reference else {})) for s in specs]
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force=force, kind="projection", sources=_sources(cohort)) as tmp:
        (tmp / GALLERY_FILE).write_bytes(render_gallery(cohort, specs, per_class))
        write_json(tmp / "specs.json", [s.model_dump(mode="json") for s in specs])
        write_json(tmp / INFO_FILE, {**_cohort_info(cohort), "provenance": provenance()})
    return out_dir


def load_projection(path: str | Path, mmap: bool = True) -> ProjectedDataset:
    """Read a dataset written by :func:`write_projection` (images memory-mapped by default)."""
    path = Path(path)
    for name in (IMAGES_FILE, SPEC_FILE, SCANS_FILE):
        if not (path / name).is_file():
            raise ConfigError(f"{path / name}: missing; not a projected dataset (write one with `volkd project`)")
    spec = ProjectionSpec.model_validate_json((path / SPEC_FILE).read_text())
    images = np.load(path / IMAGES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
    scans = pd.read_csv(path / SCANS_FILE, dtype={"scan_id": str, "subject_id": str, "label": str})
    info_path = path / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if images.shape[0] != len(scans):
        raise ConfigError(f"{path}: {IMAGES_FILE} has {images.shape[0]} images but {SCANS_FILE} has {len(scans)} rows")
    return ProjectedDataset(images, spec, scans, info, path)
