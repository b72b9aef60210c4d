"""Benchmark: every projection method on 1,000 volumes of 64³ read from a memory-mapped .npy.

Each spec runs in a fresh worker process. Prints the wall time (target ≤ 5 s), the peak of
numpy/Python allocations beyond the output array (tracemalloc; target ≤ 2 GB) and the
worker's whole peak RSS (Python, torch, the output and whatever pages of the memory-mapped
input the kernel counts); then the entropy method, with each available backend (numba:
``volkd[fast]``; numpy), against a per-slice ``np.unique`` loop (the reference code's way;
target ≥ 50× per volume in CPU time at 1 thread).

Threads: ``--threads`` (default 1) caps BLAS/OpenMP/numba/torch threads in this process and
its workers (set before numpy is imported). CPU time is ``time.process_time``; wall time is
printed too (noisy on a shared machine).

    python benchmarks/bench_projection.py [--n 1000] [--grid 64] [--chunk N] [--threads 1] [--entropy-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _threads_from_argv(argv: list[str]) -> str:
    """``--threads N`` read before numpy is imported (BLAS reads its thread count at import)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


THREADS = _threads_from_argv(sys.argv)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = THREADS

import numpy as np  # noqa: E402 - after the thread caps

ROWS = ["slice", "slices", "mip", "mean", "std", "entropy", "dynamic", "fuseme", "early-entropy"]


def _spec(name: str, grid: tuple[int, int, int]):
    from volkd.projection import preset

    ref = {v: g // 2 for v, g in zip(("sagittal", "coronal", "axial"), grid)}
    if name == "early-entropy":
        return preset("early", method="entropy", ref_index=ref)
    return preset(name, ref_index=ref)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(name: str, path: str, chunk: int | None) -> dict:
    """Time one spec on the memmap (fresh process), then measure its allocation peak."""
    from volkd.projection import project

    vols = np.load(path, mmap_mode="r")
    spec = _spec(name, tuple(vols.shape[1:]))
    project(vols[:2], spec)  # warm-up: lazy imports (torch for resizing), BLAS threads
    t0 = time.perf_counter()
    out = project(vols, spec, chunk_size=chunk)
    seconds = time.perf_counter() - t0
    out_mb = out.nbytes / 2**20
    rss = _rss_mb()
    del out
    tracemalloc.start()
    out = project(vols, spec, chunk_size=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"name": name, "seconds": seconds, "out_shape": list(out.shape), "out_mb": out_mb,
            "alloc_peak_mb": peak / 2**20 - out_mb, "rss_mb": rss}


def unique_loop_entropy(vol: np.ndarray) -> np.ndarray:
    """The reference code's way: per axial slice, quantise then ``np.unique`` counts; weighted sum."""
    lo, hi = vol.min(), vol.max()
    scale = np.float32(256) / (hi - lo)
    weights = np.empty(vol.shape[2])
    for t in range(vol.shape[2]):
        q = np.minimum(np.floor((vol[:, :, t] - lo) * scale), 255).astype(np.uint8)
        _, counts = np.unique(q, return_counts=True)
        p = counts / counts.sum()
        weights[t] = -(p * np.log2(p)).sum()
    return np.tensordot(vol, weights / weights.sum(), axes=([2], [0]))


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(CPU s, wall s) of ``fn()``: the fastest of ``repeats`` runs by CPU time."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - c0, time.perf_counter() - w0))
    return best


def entropy_vs_unique(vols: np.ndarray, n_loop: int = 20, repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Per-volume (CPU s, wall s) of the entropy method (whole set, each backend) and of the
    per-slice ``np.unique`` loop (first ``n_loop`` volumes)."""
    from volkd.projection import preset, project
    from volkd.projection.methods import entropy_backend

    spec = preset("entropy")
    backends = ["numba", "numpy"] if entropy_backend() == "numba" else ["numpy"]
    out: dict[str, tuple[float, float]] = {}
    for b in backends:
        os.environ["VOLKD_ENTROPY_BACKEND"] = b
        project(vols[:2], spec)  # warm-up (numba: load or compile the kernels)
        cpu, wall = _timed(lambda: project(vols, spec), repeats)
        out[b] = (cpu / len(vols), wall / len(vols))
    os.environ.pop("VOLKD_ENTROPY_BACKEND")
    cpu, wall = _timed(lambda: [unique_loop_entropy(np.asarray(vols[i], dtype=np.float32)) for i in range(n_loop)], 1)
    out["np.unique loop"] = (cpu / n_loop, wall / n_loop)
    return out


def torch_threads(n: int) -> None:
    """Cap torch's intra-op threads too (resizing uses torch)."""
    import torch

    torch.set_num_threads(n)


def make_volumes(path: Path, n: int, grid: int) -> None:
    rng = np.random.default_rng(0)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, grid, grid, grid))
    for i in range(0, n, 50):
        k = min(50, n - i)
        arr[i:i + k] = rng.standard_normal(size=(k, grid, grid, grid), dtype=np.float32)
    arr.flush()
    del arr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=None, help="volumes per chunk (default: project's)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/numba/torch threads (default 1)")
    ap.add_argument("--entropy-only", action="store_true", help="only the entropy vs np.unique comparison")
    ap.add_argument("--worker", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.chunk)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volumes.npy"
        t0 = time.perf_counter()
        make_volumes(path, args.n, args.grid)
        print(f"{args.n} volumes of {args.grid}³ float32 ({path.stat().st_size / 2**30:.2f} GiB) written in "
              f"{time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs (shared: timings are noisy); "
              f"{THREADS} thread(s)\n")
        if not args.entropy_only:
            print(f"{'spec':<14} {'output shape':<22} {'time s':>7} {'≤5 s':>5} {'alloc MB':>9} {'≤2 GB':>6} {'peak RSS MB':>12}")
        for name in [] if args.entropy_only else ROWS:
            cmd = [sys.executable, __file__, "--worker", name, str(path), "--threads", THREADS] + (["--chunk", str(args.chunk)] if args.chunk else [])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            ok_t = "yes" if r["seconds"] <= 5 else "NO"
            ok_m = "yes" if r["alloc_peak_mb"] <= 2048 else "NO"
            print(f"{name:<14} {str(tuple(r['out_shape'])):<22} {r['seconds']:>7.2f} {ok_t:>5} "
                  f"{r['alloc_peak_mb']:>9.0f} {ok_m:>6} {r['rss_mb']:>12.0f}")
        vols = np.load(path, mmap_mode="r")
        from volkd.projection.methods import entropy_backend

        torch_threads(int(THREADS))
        r = entropy_vs_unique(vols)
        ref_cpu, ref_wall = r["np.unique loop"]
        print(f"\nentropy per volume (axial, {args.grid}³, {THREADS} thread(s)); default backend here: {entropy_backend()}")
        print(f"{'':<16} {'CPU ms':>8} {'wall ms':>8} {'× loop (CPU)':>13} {'× loop (wall)':>14}")
        for name, (cpu, wall) in r.items():
            print(f"{name:<16} {cpu * 1e3:>8.3f} {wall * 1e3:>8.3f} {ref_cpu / cpu:>13.1f} {ref_wall / wall:>14.1f}")
        best = min(v[0] for k, v in r.items() if k != "np.unique loop")
        print(f"fastest backend: {ref_cpu / best:.0f}× the per-slice np.unique loop in CPU time (target ≥ 50×)")


if __name__ == "__main__":
    main()
