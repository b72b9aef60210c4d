"""Cohort content verification cost: recompute the hashes of volumes.npy and scans.csv, in GB/s and s/GB.

Writes a cohort of ``--n`` random ``--grid``³ float32 volumes (default 1,000 × 64³ = 1.05 GB, a
large study cohort) with ``Cohort.save`` to a temp folder, then times, ``--repeats`` times each:

* ``verify``: ``Cohort.verify()`` alone (the SHA-256 pass over volumes.npy + scans.csv);
* ``load``: ``Cohort.load(path)`` (validation, incl. the NaN/Inf scan every load does);
* ``load+verify``: ``Cohort.load(path, verify=True)``, what ``volkd run`` (start and resume),
  ``volkd info --verify`` and ``volkd predict`` on a cohort pay.

The files are read through the page cache (just written: warm); a cold read is bounded by the
disk instead. Target: ≤ 2 s per GB for the verification. Run with one thread:

    OMP_NUM_THREADS=1 python benchmarks/bench_verify.py [--n 1000] [--grid 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from volkd.data.cohort import Cohort, CohortMeta

TARGET_S_PER_GB = 2.0


def make_cohort(n: int, grid: int) -> Cohort:
    """``n`` random volumes, built in place (no second copy in memory)."""
    rng = np.random.default_rng(0)
    vols = np.empty((n, grid, grid, grid), np.float32)
    for i in range(n):
        vols[i] = rng.standard_normal((grid, grid, grid), dtype=np.float32)
    scans = pd.DataFrame({"scan_id": [f"s{i:05d}" for i in range(n)], "subject_id": [f"p{i:05d}" for i in range(n)],
                          "visit": 0, "label": ["PD" if i % 2 else "control" for i in range(n)]})
    meta = CohortMeta(grid_shape=(grid,) * 3, class_names=["control", "PD"])
    return Cohort(vols, scans, meta)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cohort"
        c = make_cohort(args.n, args.grid)
        w0 = time.perf_counter()
        c.save(path)
        t_save = time.perf_counter() - w0
        del c
        size = (path / "volumes.npy").stat().st_size + (path / "scans.csv").stat().st_size
        gb = size / 1e9
        loaded = Cohort.load(path)
        rows = {"verify": timed(loaded.verify, args.repeats),
                "load": timed(lambda: Cohort.load(path), args.repeats),
                "load+verify": timed(lambda: Cohort.load(path, verify=True), args.repeats)}
        print(f"cohort: {args.n} × {args.grid}³ float32 = {gb:.3f} GB (save incl. hashing: {t_save:.2f} s wall)")
        print(f"{'step':<12} {'wall s':>8} {'cpu s':>8} {'GB/s wall':>10} {'s/GB wall':>10} {'s/GB cpu':>9}")
        for name, (w, cp) in rows.items():
            print(f"{name:<12} {w:8.3f} {cp:8.3f} {gb / w:10.2f} {w / gb:10.3f} {cp / gb:9.3f}")
        w = rows["verify"][0] / gb
        print(f"verification: {w:.3f} s/GB wall; target ≤ {TARGET_S_PER_GB} s/GB: {'met' if w <= TARGET_S_PER_GB else 'NOT met'} "
              f"(ratio {w / TARGET_S_PER_GB:.2f} of the budget)")


if __name__ == "__main__":
    main()
