"""Synthesis throughput of the built-in synthetic cohort (scans/s, one process, wall and CPU time).

The atlas maps of a grid and the image-space calibration of a configuration (ROI kernels,
noise model, class distributions) are computed once per process (cached) and timed
separately. Usage: python benchmarks/bench_synth.py [--n-subjects 60] [--grids 64 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from volkd.data import synth
from volkd.data.synth import anatomy, drawing_contrast, make_config, render, scan_table, synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-subjects", type=int, default=60)
    ap.add_argument("--grids", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print("synthesis throughput (CPU shared with other jobs: figures are noisy; best of repeats)")
    for g in a.grids:
        for modality in ("spect", "pet"):
            t = time.perf_counter()
            an = anatomy((g, g, g))
            setup = time.perf_counter() - t
            cfg = make_config(n_subjects=a.n_subjects, grid=g, modality=modality)
            synth._drawing_contrast.cache_clear()
            synth._operator.cache_clear()
            t, c0 = time.perf_counter(), time.process_time()
            drawing_contrast(cfg)
            calib, calib_cpu = time.perf_counter() - t, time.process_time() - c0
            best, best_cpu, n = float("inf"), float("inf"), 0
            for _ in range(a.repeats):
                t, c0 = time.perf_counter(), time.process_time()
                c = synthesize(n_subjects=a.n_subjects, grid=g, modality=modality, seed=0)
                best, best_cpu, n = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c0), len(c)
            # per-stage cost of one scan (render only, no table/cohort validation)
            _, params = scan_table(cfg)
            t = time.perf_counter()
            for p in params:
                render(an, cfg, p)
            r = time.perf_counter() - t
            print(f"{modality:5s} {g}^3: {n} scans in {best:.2f} s = {n / best:6.1f} scans/s ({n / best_cpu:6.1f} per CPU s) "
                  f"(render only {len(params) / r:6.1f} scans/s; atlas set-up {setup:.2f} s once per grid; "
                  f"calibration set-up {calib:.2f} s = {calib_cpu:.2f} CPU s once per configuration)")


if __name__ == "__main__":
    main()
