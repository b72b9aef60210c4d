"""Benchmark: every projection method on 1,000 volumes of 64³ read from a memory-mapped .npy.

Each spec runs in a fresh worker process. Prints the wall time (target ≤ 5 s), the peak of
numpy/Python allocations beyond the output array (tracemalloc; target ≤ 2 GB) and the
worker's whole peak RSS (Python, torch, the output and whatever pages of the memory-mapped
input the kernel counts); then the vectorised entropy method against a per-slice
``np.unique`` loop (the reference code's way; target ≥ 50× per volume).

    python benchmarks/bench_projection.py [--n 1000] [--grid 64] [--chunk N]
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

import numpy as np

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


def entropy_vs_unique(vols: np.ndarray, n_loop: int = 20) -> tuple[float, float]:
    """Seconds per volume: vectorised entropy method (whole set) vs a per-slice np.unique loop."""
    from volkd.projection import preset, project

    spec = preset("entropy")
    t0 = time.perf_counter()
    project(vols, spec)
    fast = (time.perf_counter() - t0) / len(vols)
    t0 = time.perf_counter()
    for i in range(n_loop):
        vol = np.asarray(vols[i], dtype=np.float32)
        lo, hi = vol.min(), vol.max()
        scale = np.float32(256) / (hi - lo)
        weights = np.empty(vol.shape[2])
        for t in range(vol.shape[2]):
            q = np.minimum(np.floor((vol[:, :, t] - lo) * scale), 255).astype(np.uint8)
            _, counts = np.unique(q, return_counts=True)
            p = counts / counts.sum()
            weights[t] = -(p * np.log2(p)).sum()
        _ = np.tensordot(vol, weights / weights.sum(), axes=([2], [0]))
    slow = (time.perf_counter() - t0) / n_loop
    return fast, slow


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
              f"{time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs (shared: timings are noisy)\n")
        print(f"{'spec':<14} {'output shape':<22} {'time s':>7} {'≤5 s':>5} {'alloc MB':>9} {'≤2 GB':>6} {'peak RSS MB':>12}")
        for name in ROWS:
            cmd = [sys.executable, __file__, "--worker", name, str(path)] + (["--chunk", str(args.chunk)] if args.chunk else [])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            ok_t = "yes" if r["seconds"] <= 5 else "NO"
            ok_m = "yes" if r["alloc_peak_mb"] <= 2048 else "NO"
            print(f"{name:<14} {str(tuple(r['out_shape'])):<22} {r['seconds']:>7.2f} {ok_t:>5} "
                  f"{r['alloc_peak_mb']:>9.0f} {ok_m:>6} {r['rss_mb']:>12.0f}")
        vols = np.load(path, mmap_mode="r")
        fast, slow = entropy_vs_unique(vols)
        print(f"\nentropy per volume (axial): vectorised {fast * 1e3:.2f} ms, per-slice np.unique loop {slow * 1e3:.1f} ms "
              f"→ {slow / fast:.0f}× faster (target ≥ 50×)")


if __name__ == "__main__":
    main()
