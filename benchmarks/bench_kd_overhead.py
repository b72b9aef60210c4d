"""KD overhead of a student training epoch: no KD vs graph KD with the teacher CACHED (the
engine's way) vs graph KD running the 3D teacher forward on every batch (the naive way).

Times the training part of an epoch (`Loop._train_epoch`: forward, loss, backward, step) on
random inputs of the right shapes (timings do not depend on the content); prints samples/s,
s/epoch, the one-off cost of filling the teacher cache, and the ratios to no-KD (target for
the cached version: ≤ 1.15×).

    python benchmarks/bench_kd_overhead.py [--n 128] [--grid 32] [--projection fuseme]
        [--student lightcnn] [--teacher lightcnn] [--batch-size 32] [--epochs 3] [--threads 1]

Timings are noisy when other processes share the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from volkd.data.cohort import CohortMeta
from volkd.distill import get_kd_loss
from volkd.models import ModelSpec, build_model
from volkd.projection import preset, project, resolve_reference
from volkd.train.config import TrainConfig
from volkd.train.data import ArrayData
from volkd.train.loop import Loop, TeacherOutputs


def interleaved_epoch_seconds(loops: dict[str, Loop], rounds: int) -> dict[str, list[float]]:
    """Seconds per training epoch of each loop, the variants interleaved round by round (so
    background load hits them alike); one warm-up epoch each first."""
    opts = {k: lp._optimizer() for k, lp in loops.items()}
    times: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(rounds + 1):
        for k, lp in loops.items():
            t0 = time.perf_counter()
            lp._train_epoch(lp.model, opts[k], r)
            if r:
                times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="training scans")
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--projection", default="fuseme")
    ap.add_argument("--student", default="lightcnn")
    ap.add_argument("--teacher", default="lightcnn")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per variant (after 1 warm-up), interleaved")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    rng = np.random.default_rng(0)
    g = (a.grid,) * 3
    volumes = rng.normal(size=(a.n, *g)).astype(np.float32)
    y = torch.from_numpy((np.arange(a.n) % 3 != 0).astype(np.int64))
    spec = resolve_reference(preset(a.projection), CohortMeta(grid_shape=g, class_names=["control", "PD"]), volumes=volumes)
    images = torch.from_numpy(project(volumes, spec))
    vols = torch.from_numpy(volumes)[:, None]

    teacher = build_model(ModelSpec(arch=a.teacher, spatial_dims=3, in_channels=1, num_classes=2, stem_stride=2)).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = [teacher(vols[i:i + a.batch_size]) for i in range(0, a.n, a.batch_size)]
    cache_s = time.perf_counter() - t0
    cache = TeacherOutputs(torch.cat([o[1] for o in outs]), torch.cat([o[0] for o in outs]))

    graph = get_kd_loss("graph")

    def graph_teacher_every_batch(se, sl, te, tl):  # noqa: ANN001
        # the "cache" below holds each scan's index, so the batch's volumes can be fetched
        idx = te[:, 0].long()
        with torch.no_grad():
            zt, ft = teacher(vols[idx])
        return graph(se, sl, ft, zt)

    index_cache = TeacherOutputs(torch.arange(a.n, dtype=torch.float32)[:, None], torch.zeros(a.n, 2))
    mspec = ModelSpec(arch=a.student, spatial_dims=2, in_channels=spec.in_channels, n_views=spec.n_views, num_classes=2)
    cfg = TrainConfig(batch_size=a.batch_size, progress=False, deterministic=False)
    data = ArrayData(images, y, torch.arange(a.n))
    meta: dict = {}
    variants = {
        "no KD": dict(),
        "graph KD, teacher cached": dict(kd=graph, teacher=cache),
        "graph KD, teacher every batch": dict(kd=graph_teacher_every_batch, teacher=index_cache),
    }
    print(f"student {a.student} 2D on {a.projection} {tuple(images.shape[1:])}, teacher {a.teacher} 3D on {g}, "
          f"{a.n} scans, batch {a.batch_size}, {a.threads} thread(s)")
    print(f"teacher cache (one pass over {a.n} scans, once per teacher): {cache_s:.2f} s")
    loops = {}
    with tempfile.TemporaryDirectory() as d:
        for name, kw in variants.items():
            torch.manual_seed(0)
            loops[name] = Loop(build_model(mspec), data, data, cfg, Path(d), meta, spatial_dims=2, **kw)
        times = interleaved_epoch_seconds(loops, a.epochs)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"{'variant':32s} {'s/epoch med':>11s} {'min':>7s} {'samples/s':>10s} {'× no KD (med)':>14s} {'(min)':>6s}")
    for k in times:
        print(f"{k:32s} {med[k]:11.3f} {best[k]:7.3f} {a.n / med[k]:10.1f} {med[k] / med['no KD']:14.3f} {best[k] / best['no KD']:6.3f}")
    c, t = "graph KD, teacher cached", "graph KD, teacher every batch"
    print(f"KD overhead with the cache: {med[c] / med['no KD']:.3f}× median, {best[c] / best['no KD']:.3f}× min-of-epochs "
          f"(target ≤ 1.15×); teacher every batch: {med[t] / med['no KD']:.2f}×")


if __name__ == "__main__":
    main()
