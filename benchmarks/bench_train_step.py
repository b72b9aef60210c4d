"""Per-epoch cost of the training loop for the quick profile's networks: wall time, CPU time,
FLOPs and achieved GFLOP/s, at 1 and 2 threads, next to this machine's measured matmul peak.

Networks (the quick profile): teacher lightcnn width 12 on 32³ volumes; students lightcnn
width 8 on 32² images — `slices` (3 channels, one view) and `fuseme` (3 views × 3 channels,
joint) — batch 32, RAdam, augmentation on, deterministic algorithms on (the defaults), and the
graph-KD student on fuseme. Inputs are random (timings do not depend on the content).

Each variant runs ``Loop._train_epoch`` (forward, loss, backward, optimiser step: the
training part of an epoch) ``--epochs`` times after one warm-up epoch; then one full
``Loop.run`` epoch (+ validation, checkpoint, history) is timed. FLOPs of one training epoch
come from ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward of every batch).

Runs against whichever volkd is importable, so the same script measures before and after:

    PYTHONPATH=/path/to/old/src python benchmarks/bench_train_step.py   # before
    python benchmarks/bench_train_step.py [--n 180] [--epochs 3] [--threads 1,2] [--only teacher]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _threads_from_argv(argv: list[str]) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return max(int(x) for x in argv[i + 1].split(","))
    return 2


# the intra-op pool is sized at import; per variant torch.set_num_threads() picks 1 or 2
os.environ.setdefault("OMP_NUM_THREADS", str(_threads_from_argv(sys.argv)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import volkd  # noqa: E402
from volkd.distill import get_kd_loss  # noqa: E402
from volkd.models import ModelSpec, build_model  # noqa: E402
from volkd.train.config import TrainConfig  # noqa: E402
from volkd.train.data import ArrayData  # noqa: E402
from volkd.train.loop import Loop, TeacherOutputs, _deterministic  # noqa: E402

META = {"kind": "student", "model_spec": {}, "projection_spec": None, "normalizer": {"name": "none"},
        "class_names": ["control", "PD"], "config": {}, "seed": 0, "versions": {}, "cohort_fingerprint": "bench",
        "split": {}, "train_subjects": [], "teacher_hash": None}


def variants(n: int) -> dict[str, dict]:
    """name → model spec, input shape, spatial dims, KD (quick-profile networks)."""
    common = dict(arch="lightcnn", num_classes=2, stem_stride=2, stem_kernel=7)
    return {
        "teacher 3D 32³ w12": dict(spec=ModelSpec(spatial_dims=3, in_channels=1, width=12, **common), shape=(1, 32, 32, 32), dims=3),
        "student slices 32² w8": dict(spec=ModelSpec(spatial_dims=2, in_channels=3, width=8, **common), shape=(3, 32, 32), dims=2),
        "student fuseme w8": dict(spec=ModelSpec(spatial_dims=2, in_channels=3, n_views=3, width=8, **common), shape=(3, 3, 32, 32), dims=2),
        "student fuseme w8 +graph KD": dict(spec=ModelSpec(spatial_dims=2, in_channels=3, n_views=3, width=8, **common),
                                            shape=(3, 3, 32, 32), dims=2, kd=True),
    }


def make_loop(v: dict, n: int, out: Path, batch_size: int) -> Loop:
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 3 != 0).long()
    x = torch.randn(n, *v["shape"], generator=g)
    data = ArrayData(x, y, torch.arange(n))
    val = ArrayData(x[: n // 3].clone(), y[: n // 3].clone(), torch.arange(n // 3))
    cfg = TrainConfig(batch_size=batch_size, lr=3e-3, progress=False, epochs=1, augment={"enabled": True})
    kw = {}
    if v.get("kd"):
        kw = dict(kd=get_kd_loss("graph", w_metric=0.2), teacher=TeacherOutputs(torch.randn(n, 96, generator=g), torch.randn(n, 2, generator=g)))
    torch.manual_seed(0)
    return Loop(build_model(v["spec"]), data, val, cfg, out, {**META, "config": cfg.model_dump(mode="json")}, v["dims"], **kw)


def epoch_flops(loop: Loop) -> int:
    """FLOPs (forward + backward) of one training epoch."""
    opt = loop._optimizer()
    with FlopCounterMode(display=False) as fc:
        loop._train_epoch(loop.model, opt, 0)
    return int(fc.get_total_flops())


def time_epochs(loop: Loop, epochs: int) -> tuple[list[float], list[float]]:
    """(wall s, CPU s) of ``epochs`` training epochs after one warm-up epoch."""
    opt = loop._optimizer()
    walls, cpus = [], []
    for e in range(epochs + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        loop._train_epoch(loop.model, opt, e)
        if e:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return walls, cpus


def time_full_epoch(v: dict, n: int, batch_size: int) -> tuple[float, float]:
    """(wall s, CPU s) of one ``Loop.run`` epoch: train + validation + checkpoint + history."""
    with tempfile.TemporaryDirectory() as d:
        loop = make_loop(v, n, Path(d), batch_size)
        w0, c0 = time.perf_counter(), time.process_time()
        loop.run()
        return time.perf_counter() - w0, time.process_time() - c0


def matmul_peak(threads: int) -> float | None:
    """GFLOP/s per core from the library (absent in versions before volkd.train.perf)."""
    try:
        from volkd.train.perf import matmul_peak_gflops
    except ImportError:
        return None
    return matmul_peak_gflops(threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=180, help="training scans (quick profile: ≈ 180)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3, help="timed training epochs per variant (after 1 warm-up)")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--only", default=None, help="run only variants whose name contains this")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    print(f"volkd from {Path(volkd.__file__).parent}; torch {torch.__version__}; {os.cpu_count()} CPUs (shared: "
          f"wall time is noisy, CPU time less so); {a.n} scans, batch {a.batch_size}")
    vs = {k: v for k, v in variants(a.n).items() if a.only is None or a.only in k}
    with _deterministic(True):  # as Loop.run trains (TrainConfig.deterministic defaults to True)
        run_all(a, vs, threads)
    print("\nGFLOP/s = FLOPs / wall; /core = FLOPs / CPU time; % peak = /core vs the matmul peak per core.")


def run_all(a: argparse.Namespace, vs: dict[str, dict], threads: list[int]) -> None:
    """FLOPs once, then the timings at each thread count."""
    flops = {}
    with tempfile.TemporaryDirectory() as d:
        torch.set_num_threads(1)
        for name, v in vs.items():
            flops[name] = epoch_flops(make_loop(v, a.n, Path(d), a.batch_size))
    for t in threads:
        torch.set_num_threads(t)
        peak = matmul_peak(t)
        print(f"\n{t} thread(s); matmul peak: " + (f"{peak:.1f} GFLOP/s per core" if peak else "n/a (no volkd.train.perf)"))
        print(f"{'variant':30s} {'GFLOP/ep':>9s} {'wall s/ep':>10s} {'CPU s/ep':>9s} {'GFLOP/s':>8s} {'/core':>7s} "
              f"{'% peak':>7s} {'full ep wall':>13s} {'CPU':>6s}")
        for name, v in vs.items():
            with tempfile.TemporaryDirectory() as d:
                walls, cpus = time_epochs(make_loop(v, a.n, Path(d), a.batch_size), a.epochs)
            fw, fc = time_full_epoch(v, a.n, a.batch_size)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            gf = flops[name] / 1e9
            rate = gf / wall
            per_core = gf / cpu
            pct = f"{100 * per_core / peak:6.1f}%" if peak else "    n/a"
            print(f"{name:30s} {gf:9.2f} {wall:10.3f} {cpu:9.3f} {rate:8.1f} {per_core:7.1f} {pct:>7s} {fw:13.3f} {fc:6.3f}")


if __name__ == "__main__":
    main()
