"""Inference cost per scan on CPU: 2D students (projection + 2D forward) vs 3D teachers (3D forward).

Reports median latency per scan (batch 1, fp32), parameters, forward FLOPs
(`torch.utils.flop_counter.FlopCounterMode`) and the teacher/student latency ratio (target ≥ 10×
for the default CPU models: light-CNN 3D teacher vs light-CNN 2D student).

    python benchmarks/bench_inference.py [--grid 64] [--repeats 30] [--threads 1] [--json out.json]

Timings are noisy when other processes share the CPU; the FLOP ratios are exact.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from volkd.models import ModelSpec, build_model
from volkd.projection import preset, project

TEACHERS = {
    "lightcnn-3d": dict(arch="lightcnn", spatial_dims=3, in_channels=1),
    "resnet18-3d (stride-2 stem)": dict(arch="resnet18", spatial_dims=3, in_channels=1, stem_stride=2),
}
STUDENT_ARCHS = {
    "lightcnn": dict(arch="lightcnn"),
    "resnet18 (stride-2 stem)": dict(arch="resnet18", stem_stride=2),
}
PROJECTIONS = ("fuseme", "slice", "mip")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (convolutions and matmuls, as counted by FlopCounterMode)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_teacher(name: str, fields: dict, volume: np.ndarray, repeats: int) -> dict:
    """Latency/params/FLOPs of a 3D teacher on one volume (the array → tensor copy included)."""
    model = build_model(ModelSpec(**fields)).eval()
    x = torch.from_numpy(volume[None, None])

    def run() -> None:
        with torch.no_grad():
            model(torch.from_numpy(volume[None, None].copy()))

    return {"name": name, "seconds": median_seconds(run, repeats), "params": n_params(model), "flops": forward_flops(model, x)}


def bench_student(proj_name: str, arch_name: str, fields: dict, volume: np.ndarray, repeats: int) -> dict:
    """Latency of projection + 2D forward for one scan, and the projection's share of it."""
    centre = {v: s // 2 for v, s in zip(("sagittal", "coronal", "axial"), volume.shape)}
    spec = preset(proj_name, ref_index=centre)
    model = build_model(ModelSpec(**fields, spatial_dims=2, in_channels=spec.in_channels, n_views=spec.n_views)).eval()
    vols = volume[None]

    def project_only() -> np.ndarray:
        return project(vols, spec)

    def run() -> None:
        with torch.no_grad():
            model(torch.from_numpy(project(vols, spec)))

    x = torch.from_numpy(project_only())
    return {
        "name": f"{arch_name} 2D on {proj_name} {tuple(x.shape[1:])}",
        "seconds": median_seconds(run, repeats),
        "projection_seconds": median_seconds(project_only, repeats),
        "params": n_params(model),
        "flops": forward_flops(model, x),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=64, help="volume edge (voxels)")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per model (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    volume = np.random.default_rng(0).random((args.grid,) * 3, dtype=np.float32)

    teachers = [bench_teacher(n, f, volume, args.repeats) for n, f in TEACHERS.items()]
    students = [bench_student(p, a, f, volume, args.repeats) for p in PROJECTIONS for a, f in STUDENT_ARCHS.items()]

    print(f"CPU inference per scan, batch 1, fp32, {args.threads} thread(s), volume {args.grid}³, "
          f"median of {args.repeats} (timings noisy on a shared CPU)\n")
    print(f"{'model':54s} {'ms/scan':>9s} {'proj ms':>8s} {'params':>11s} {'GFLOPs':>8s}")
    for r in teachers + students:
        proj = f"{1e3 * r['projection_seconds']:8.3f}" if "projection_seconds" in r else f"{'-':>8s}"
        print(f"{r['name']:54s} {1e3 * r['seconds']:9.2f} {proj} {r['params']:11,d} {r['flops'] / 1e9:8.3f}")
    print("\nteacher latency / student latency (FLOP ratio in brackets); target ≥ 10× for lightcnn-3d vs lightcnn 2D")
    for t in teachers:
        for s in students:
            print(f"  {t['name']:28s} / {s['name']:54s} {t['seconds'] / s['seconds']:7.1f}×  "
                  f"[{t['flops'] / s['flops']:7.1f}×]")
    if args.json:
        from volkd.atomic import write_json

        write_json(args.json, {"grid": args.grid, "threads": args.threads, "teachers": teachers, "students": students})


if __name__ == "__main__":
    main()
