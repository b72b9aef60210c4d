"""Prediction throughput from NIfTI files on disk to a predictions CSV: 2D student vs 3D teacher (CPU).

Trains a default CPU light-CNN teacher and a FuseMe light-CNN student for one epoch on a synthetic
cohort (weights do not change the cost), writes ``--n-scans`` scans as NIfTI files in MNI space on
the PPMI 2 mm grid (91×109×91, so every scan is really resampled to the model grid), then times
``volkd.inference.predict_to_csv`` for each checkpoint (best of ``--repeats``). Prints scans/s and
the student/teacher throughput ratio. Timings are noisy when other processes share the CPU.

    python benchmarks/bench_predict.py [--grid 64] [--n-scans 32] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from volkd.data.atlas import MNI_FOV_AFFINE, MNI_FOV_SHAPE
from volkd.data.resample import resample_to_grid
from volkd.data.splits import holdout_splits
from volkd.data.synth import synthesize
from volkd.inference import predict_to_csv
from volkd.models import ModelSpec
from volkd.train import TrainConfig, train_student, train_teacher
from volkd.train.api import student_model_spec


def best_seconds(fn, repeats: int) -> float:
    """Fastest wall time of ``fn()`` over ``repeats`` runs."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--n-scans", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = (args.grid,) * 3
    cohort = synthesize(n_subjects=24, grid=grid, visits=2, seed=0)
    split = holdout_splits(cohort, n_repeats=1)[0]
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        t = train_teacher(cohort, split, ModelSpec(arch="lightcnn", spatial_dims=3, in_channels=1, num_classes=2), cfg, root / "teacher")
        s = train_student(cohort, split, "fuseme", student_model_spec("lightcnn", "fuseme", 2), "graph", t.best_checkpoint, cfg, root / "student")
        scans = root / "scans"
        scans.mkdir()
        aff = np.asarray(cohort.meta.affine)
        for k in range(args.n_scans):  # back onto PPMI's 2 mm MNI grid: prediction must resample like a real scan
            vol = resample_to_grid(np.asarray(cohort.volumes[k % len(cohort)]), aff, MNI_FOV_SHAPE, MNI_FOV_AFFINE)
            nib.save(nib.Nifti1Image(vol, MNI_FOV_AFFINE), scans / f"scan_{k:04d}.nii.gz")
        rate = {}
        for name, ckpt in (("student (lightcnn 2D, fuseme)", s.best_checkpoint), ("teacher (lightcnn 3D)", t.best_checkpoint)):
            sec = best_seconds(lambda: predict_to_csv(ckpt, [scans], root / "p.csv", force=True), args.repeats)
            rate[name] = args.n_scans / sec
            print(f"{name:32s} {rate[name]:7.2f} scans/s  ({1000 * sec / args.n_scans:6.1f} ms/scan, NIfTI 91×109×91 → {args.grid}³ → CSV)")
    (sname, srate), (tname, trate) = rate.items()
    print(f"student/teacher throughput ratio: {srate / trate:.2f}× ({args.n_scans} scans, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
