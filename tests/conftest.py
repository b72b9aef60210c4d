"""Shared fixtures: small cohorts made in memory, the shared real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volkd.data.cohort import Cohort, CohortMeta

SHARED_DATA = Path(os.environ.get("VOLKD_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()
MEDMNIST_28 = SHARED_DATA / "medmnist" / "adrenalmnist3d.npz"
MEDMNIST_64 = SHARED_DATA / "medmnist" / "adrenalmnist3d_64.npz"


def make_cohort(n_subjects: int = 12, visits: int = 2, grid: int = 16, seed: int = 0) -> Cohort:
    """A tiny random cohort: ``n_subjects`` subjects × ``visits`` scans, two classes."""
    rng = np.random.default_rng(seed)
    rows, vols = [], []
    for s in range(n_subjects):
        label = "PD" if s % 3 else "control"
        for v in range(visits):
            rows.append({"scan_id": f"S{s:03d}_V{v}", "subject_id": f"S{s:03d}", "visit": v, "label": label})
            vol = rng.normal(size=(grid, grid, grid)).astype(np.float32)
            if label == "PD":
                vol[grid // 2 - 2:grid // 2 + 2] += 1.0
            vols.append(vol)
    meta = CohortMeta(grid_shape=(grid, grid, grid), voxel_size_mm=(2.0, 2.0, 2.0), modality="spect", class_names=["control", "PD"])
    return Cohort(np.stack(vols), pd.DataFrame(rows), meta)


def tiny_study_config(**overrides):
    """A study config small enough to run end to end in seconds (16³, 1 repeat, 1 epoch, mip)."""
    from volkd.experiment.config import validate_config

    base = {
        "name": "tiny", "dataset": {"n_subjects": 16, "grid": 16, "options": {"visits": 1}},
        "split": {"repeats": 1}, "teacher": {"width": 4}, "student": {"width": 4},
        "projections": ["mip"], "kd": [{"name": "none"}, {"name": "graph"}],
        "training": {"epochs": 1, "patience": 1, "batch_size": 8},
        "report": {"latency_runs": 1, "graph_batch": 4, "gallery_scans": 1},
    }
    base.update(overrides)
    return validate_config(base)


@pytest.fixture
def tiny_cohort() -> Cohort:
    return make_cohort()


@pytest.fixture
def medmnist28() -> Path:
    if not MEDMNIST_28.is_file():
        pytest.skip(f"shared MedMNIST data not found at {MEDMNIST_28}")
    return MEDMNIST_28
