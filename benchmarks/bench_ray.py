"""Benchmark: a tiny study's wall time with the Ray executor on 1 vs 2 workers (2 cores).

Runs the same tiny study (synthetic cohort, 2 repeats, 2 projections × {none, graph}: 12 trials)
with the local executor, then on a fresh local Ray instance limited to 1 CPU and to 2 CPUs
(``cpus_per_trial: 1``, so 1 or 2 trials at a time, 1 torch thread each). Prints the time spent
running trials (the executor) and the whole ``run_study`` (data, report and Ray start-up
included), the 1-worker / 2-worker ratio, and checks that every run gave the same per-trial
metrics. Numbers are noisy on a shared machine.

    python benchmarks/bench_ray.py [--subjects 64] [--grid 32] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=64)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import torch

    torch.set_num_threads(1)  # the local reference uses what each Ray worker uses

    import volkd.experiment.executors as executors
    import volkd.experiment.ray_executor as ray_executor
    from volkd.experiment.config import validate_config
    from volkd.experiment.ray_executor import RayExecutor
    from volkd.study import run_study

    phase: dict[str, float] = {}

    def timed(cls: type) -> None:
        real = cls.run

        def run(self, trials, ctx, view):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return real(self, trials, ctx, view)
            finally:
                phase["trials"] = time.perf_counter() - t0
        cls.run = run

    timed(executors.LocalExecutor)
    timed(RayExecutor)
    real_connect = ray_executor.connect

    def connect(execution):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return real_connect(execution)
        finally:
            phase["start"] = time.perf_counter() - t0
    ray_executor.connect = connect

    base = {
        "name": "bench-ray", "dataset": {"n_subjects": args.subjects, "grid": args.grid},
        "split": {"repeats": 2}, "teacher": {"width": 4}, "student": {"width": 8},
        "projections": ["mip", "early"], "kd": [{"name": "none"}, {"name": "graph"}],
        "training": {"epochs": args.epochs, "patience": args.epochs, "batch_size": 8},
        "report": {"latency_runs": 1, "graph_batch": 4, "gallery_scans": 1},
    }
    root = Path(tempfile.mkdtemp(prefix="volkd-bench-ray-"))
    runs = [("local", "local", None), ("ray, 1 worker", "ray", 1), ("ray, 2 workers", "ray", 2)]
    rows, metrics = [], {}
    print(f"tiny study: {args.subjects} subjects at {args.grid}³, 2 repeats, projections mip+early × KD none+graph, "
          f"{args.epochs} epochs; {os.cpu_count()} CPU(s) on this machine")
    for label, executor, cpus in runs:
        cfg = validate_config({**base, "execution": {"executor": executor, "num_cpus": cpus, "cpus_per_trial": 1}})
        t0 = time.perf_counter()
        phase["start"] = 0.0
        res = run_study(cfg, root / label.replace(", ", "-").replace(" ", ""), progress=False)
        total = time.perf_counter() - t0
        recs = [json.loads(p.read_text()) for p in sorted((res.root / "trials").glob("*.json"))]
        busy = sum(r["seconds"] for r in recs)
        rows.append((label, phase["trials"], phase["start"], busy, total, res.n_failed))
        metrics[label] = {r["trial_id"]: r.get("metrics") for r in recs}
    print(f"{'executor':<16}{'trials (s)':>11}{'Ray start':>10}{'Σ trial (s)':>12}{'parallel':>9}{'run_study (s)':>14}{'failed':>7}")
    for label, tr, st, busy, tot, f in rows:
        print(f"{label:<16}{tr:>11.1f}{st:>10.1f}{busy:>12.1f}{busy / (tr - st):>8.2f}×{tot:>14.1f}{f:>7}")
    print("trials = the executor's wall time (Ray start and worker start-up included); Σ trial = the trials' own "
          "seconds; parallel = Σ trial / (trials − Ray start)")
    one, two = rows[1], rows[2]
    print(f"1 worker / 2 workers: trials {one[1] / two[1]:.2f}×, run_study {one[4] / two[4]:.2f}× "
          f"(2.00× would be perfect scaling; the teacher of a repeat gates its KD students)")
    same = all(metrics[k] == metrics["local"] for k in metrics)
    print(f"per-trial metrics identical across the three runs: {same}")


if __name__ == "__main__":
    main()
