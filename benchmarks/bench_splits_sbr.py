"""Throughput of the data/evaluation utilities: splits, normaliser fit/transform, SBR features.

    python benchmarks/bench_splits_sbr.py [--n-scans 200] [--grid 64] [--subjects 1028]

* split: 20 subject-level stratified hold-out repeats and 5-fold on a PPMI-sized table
  (816 PD + 212 controls, 1–3 visits each);
* normalisers: zscore / global_zscore fit streamed from a memory-mapped N×64³ .npy
  (scans/s), and transform throughput;
* SBR: caudate/putamen L/R binding ratios of a memory-mapped cohort (scans/s).

Timings are noisy when other processes share the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from volkd.data.atlas import mni_grid_affine
from volkd.data.cohort import Cohort, CohortMeta
from volkd.data.normalize import get_normalizer
from volkd.data.splits import holdout_splits, kfold_splits
from volkd.evaluate import sbr_features


def _table_cohort(n_subjects: int, seed: int = 0) -> Cohort:
    rng = np.random.default_rng(seed)
    n_pd = round(n_subjects * 816 / 1028)
    rows = [{"scan_id": f"S{s}_{v}", "subject_id": f"S{s}", "visit": v, "label": "PD" if s < n_pd else "control"}
            for s in range(n_subjects) for v in range(int(rng.integers(1, 4)))]
    meta = CohortMeta(grid_shape=(2, 2, 2), class_names=["control", "PD"])
    return Cohort(np.zeros((len(rows), 2, 2, 2), np.float32), pd.DataFrame(rows), meta)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-scans", type=int, default=200)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--subjects", type=int, default=1028)
    a = ap.parse_args()

    c = _table_cohort(a.subjects)
    splits, t = _timed(lambda: holdout_splits(c, n_repeats=20))
    sizes = np.array([[len(s.train), len(s.val), len(s.test)] for s in splits]) / len(c)
    print(f"split: holdout 20 repeats on {a.subjects} subjects / {len(c)} scans: {t:.2f} s; "
          f"scan fractions mean {sizes.mean(0).round(3).tolist()} (requested 0.6/0.2/0.2 of subjects)")
    _, t = _timed(lambda: kfold_splits(c, k=5))
    print(f"split: 5-fold: {t:.2f} s")

    g = (a.grid,) * 3
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(a.n_scans, *g))
        for i in range(0, a.n_scans, 16):
            mm[i:i + 16] = rng.gamma(4.0, 25.0, size=(min(16, a.n_scans - i), *g)).astype(np.float32)
        mm.flush()
        del mm
        vol = np.load(path, mmap_mode="r")
        mb = vol.nbytes / 2**20
        train = np.arange(0, a.n_scans)
        for name in ("zscore", "global_zscore"):
            n, t = _timed(lambda: get_normalizer(name).fit(vol, train))
            print(f"normalise: {name} fit on {a.n_scans}×{a.grid}³ memmap ({mb:.0f} MiB): {t:.2f} s = {a.n_scans / t:.0f} scans/s")
            batch = np.asarray(vol[:32])
            _, t = _timed(lambda: n.transform(batch))
            print(f"normalise: {name} transform: {32 / t:.0f} scans/s")
        _, t = _timed(lambda: sbr_features(vol[:8], g, mni_grid_affine(g)))  # first call builds the atlas masks
        print(f"sbr: atlas masks on {a.grid}³ + 8 scans: {t:.2f} s")
        _, t = _timed(lambda: sbr_features(vol, g, mni_grid_affine(g)))
        print(f"sbr: features of {a.n_scans} scans (memmap): {t:.2f} s = {a.n_scans / t:.0f} scans/s")


if __name__ == "__main__":
    main()
