"""Import throughput: 91×109×91 NIfTI (2 mm, MNI affine) → 64³ cohort, in scans per second.

Writes ``--n`` NIfTI files (gzipped by default, as PPMI ships them) and a labels CSV to a temp
folder, then times ``volkd.data.importer.import_scans`` end to end (read, reorient, anti-aliased
resample, atomic cohort write). Target: ≥ 5 scans/s on 2 CPU cores.

    python benchmarks/bench_import.py [--n 40] [--grid 64] [--uncompressed]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from volkd.data.atlas import MNI_FOV_AFFINE, MNI_FOV_SHAPE
from volkd.data.importer import import_scans
from volkd.data.readers import read_nifti
from volkd.data.resample import resample_scan

TARGET = 5.0


def write_scans(folder: Path, n: int, gz: bool) -> Path:
    """``n`` smooth random MNI-space scans and a labels CSV; returns the CSV path."""
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.random(MNI_FOV_SHAPE).astype(np.float32), 3) * 100
    rows = []
    for i in range(n):
        vol = base + rng.normal(0, 1, MNI_FOV_SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, MNI_FOV_AFFINE), folder / f"scan{i:03d}.nii{'.gz' if gz else ''}")
        rows.append({"scan_id": f"scan{i:03d}", "subject_id": f"s{i:03d}", "visit": 0, "label": "PD" if i % 2 else "control"})
    csv = folder.parent / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--uncompressed", action="store_true", help="write .nii instead of .nii.gz")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "scans"
        src.mkdir()
        csv = write_scans(src, args.n, gz=not args.uncompressed)
        # per-stage timing on one scan (median of 5)
        f = sorted(src.iterdir())[0]
        t_read, t_res = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            sv = read_nifti(f)
            t1 = time.perf_counter()
            resample_scan(sv.data, sv.affine, (args.grid,) * 3, "mni")
            t_res.append(time.perf_counter() - t1)
            t_read.append(t1 - t0)
        t0 = time.perf_counter()
        cohort, _ = import_scans(src, Path(tmp) / "cohort", labels_csv=csv, target_grid=args.grid)
        dt = time.perf_counter() - t0
        rate = len(cohort) / dt
    kind = "nii" if args.uncompressed else "nii.gz"
    print(f"import {args.n} × {MNI_FOV_SHAPE} {kind} (2 mm MNI) → {args.grid}³: {dt:.2f} s, {rate:.1f} scans/s "
          f"(target ≥ {TARGET:.0f}; ratio {rate / TARGET:.2f}×)")
    print(f"per scan: read+reorient {np.median(t_read) * 1e3:.1f} ms, anti-aliased resample {np.median(t_res) * 1e3:.1f} ms, "
          f"rest (CSV, cohort write, validation) {(dt / args.n - np.median(t_read) - np.median(t_res)) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
