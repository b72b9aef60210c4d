"""Benchmark: the quick profile (what `volkd run` does with no arguments) end to end.

Prints wall time, peak RSS, the time per trial kind and the teacher's test scores against
the budget (≤ 10 min on 2 CPU cores, ≤ 4 GB). ``--scale small`` runs a reduced study
(fewer subjects, 1 repeat) for a quick check. Numbers are noisy on a shared machine.

    python benchmarks/bench_study.py [--scale quick|small] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=["quick", "small"], default="quick")
    ap.add_argument("--out", type=Path, default=None, help="study folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (1 gives a CPU time that bounds the 2-core wall time on a loaded machine)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from volkd.experiment.config import load_profile, validate_config
    from volkd.study import run_study

    cfg = load_profile("quick")
    if args.scale == "small":
        d = cfg.model_dump(mode="json")
        d["dataset"]["n_subjects"] = 80
        d["split"]["repeats"] = 1
        d["name"] = "quick-small"
        cfg = validate_config(d)
    out = args.out or Path(tempfile.mkdtemp(prefix="volkd-bench-")) / cfg.name
    print(f"profile {cfg.name}: {cfg.dataset.n_subjects} subjects at {cfg.dataset.grid}³, {cfg.split.repeats} repeat(s), "
          f"projections {cfg.projections}, KD {cfg.kd_names}; torch threads {torch.get_num_threads()}")
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_study(cfg, out, force=True, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    results = pd.read_csv(res.root / "results.csv")
    by_kind = results.groupby("kind")["seconds"].agg(["count", "mean", "sum"]).round(1)
    print(by_kind.to_string())
    teacher = results[results["kind"] == "teacher"]
    print(f"teacher test f1_weighted: {teacher['f1_weighted'].round(3).tolist()}  balanced accuracy: "
          f"{teacher['balanced_accuracy'].round(3).tolist()}")
    print(res.headline[["method", "no_kd_mean", "kd_mean", "delta", "p_value", "verdict"]].round(3).to_string(index=False))
    print(f"trials: {res.n_trials} ({res.n_failed} failed)")
    print(f"wall time: {wall:.0f} s  (budget 600 s: {wall / 600:.2f}×); CPU time (user+sys): {cpu:.0f} s")
    print(f"peak RSS: {rss:.0f} MB  (budget 4096 MB: {rss / 4096:.2f}×)")
    print(f"report: {res.report_html}")


if __name__ == "__main__":
    main()
