"""Study artefacts beyond per-trial results: projection galleries, the cost table
(parameters, FLOPs, CPU latency per scan) and the batch relation graphs on test scans."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from volkd.atomic import atomic_file
from volkd.data.cohort import Cohort
from volkd.data.splits import Split
from volkd.distill import graph_affinity
from volkd.experiment.config import StudyConfig
from volkd.experiment.store import StudyStore
from volkd.experiment.trials import Trial
from volkd.projection import preset, project, resolve_reference
from volkd.projection.gallery import write_gallery
from volkd.train import load_checkpoint


# ----------------------------------------------------------------- gallery
def write_galleries(cfg: StudyConfig, store: StudyStore, cohort: Cohort, splits: list[Split]) -> list[Path]:
    """One gallery PNG per group of projections sharing their views (``figures/gallery-*.png``)."""
    groups: dict[tuple[str, ...], list[Any]] = {}
    for p in cfg.projections:
        spec = resolve_reference(preset(p), cohort.meta, volumes=np.asarray(cohort.volumes[np.sort(splits[0].train)]))
        groups.setdefault(tuple(spec.views), []).append(spec)
    fig_dir = store.root / "figures"
    for old in fig_dir.glob("gallery-*.png"):
        old.unlink()
    test = cohort.subset(np.sort(splits[0].test))
    out = []
    for views, specs in groups.items():
        out.append(write_gallery(fig_dir / f"gallery-{'-'.join(views)}.png", test, specs, n_per_class=cfg.report.gallery_scans))
    return out


# -------------------------------------------------------------------- cost
def _first_ok(store: StudyStore, trials: list[Trial]) -> Trial | None:
    return next((t for t in trials if store.is_finished(t) and (store.model_dir(t) / "best.pt").is_file()), None)


def _inference_fn(ckpt: Any) -> tuple[torch.nn.Module, Callable[[np.ndarray], torch.Tensor]]:
    """The model and a function raw volumes → model input (normalisation + projection)."""
    model, norm, spec = ckpt.build_model(), ckpt.build_normalizer(), ckpt.build_projection()

    def prepare(vols: np.ndarray) -> torch.Tensor:
        x = norm.transform(np.asarray(vols, dtype=np.float32))
        x = x[:, None] if spec is None else project(x, spec)
        return torch.from_numpy(np.ascontiguousarray(x))

    return model, prepare


def measure_cost(ckpt: Any, volume: np.ndarray, runs: int = 10) -> dict[str, Any]:
    """Parameters, forward FLOPs per scan (torch.utils.flop_counter) and median CPU latency per
    scan in ms (normalisation + projection + forward, batch of one)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, prepare = _inference_fn(ckpt)
    vol = np.asarray(volume, dtype=np.float32)[None]
    x = prepare(vol)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        flops = int(counter.get_total_flops())
        for _ in range(2):  # warm-up
            model(prepare(vol))
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(prepare(vol))
            times.append(time.perf_counter() - t0)
    return {"input": "×".join(str(s) for s in x.shape[1:]), "parameters": int(sum(p.numel() for p in model.parameters())),
            "MFLOPs/scan": round(flops / 1e6, 2), "CPU ms/scan": round(1000 * statistics.median(times), 2)}


def write_cost_table(cfg: StudyConfig, store: StudyStore, cohort: Cohort, splits: list[Split]) -> Path | None:
    """``cost.csv``: the teacher and one student per projection (KD does not change the cost)."""
    n = len(splits)
    rows = []
    vol = np.asarray(cohort.volumes[int(splits[0].test[0])])
    teacher = _first_ok(store, [Trial(r, "teacher") for r in range(n)])
    if teacher is not None:
        ck = load_checkpoint(store.model_dir(teacher) / "best.pt")
        rows.append({"model": f"3D teacher ({cfg.teacher.arch})", **measure_cost(ck, vol, cfg.report.latency_runs)})
    for p in cfg.projections:
        t = _first_ok(store, [Trial(r, "student", p, k) for r in range(n) for k in cfg.kd_names])
        if t is None:
            continue
        ck = load_checkpoint(store.model_dir(t) / "best.pt")
        rows.append({"model": f"2D student {p} ({cfg.student.arch})", **measure_cost(ck, vol, cfg.report.latency_runs)})
    if not rows:
        return None
    path = store.root / "cost.csv"
    with atomic_file(path) as fh:
        pd.DataFrame(rows).to_csv(fh, index=False)
    return path


# ------------------------------------------------------------------ graphs
def embeddings(ckpt: Any, volumes: np.ndarray) -> torch.Tensor:
    """Pooled embeddings (the features KD compares) of raw ``volumes``."""
    model, prepare = _inference_fn(ckpt)
    with torch.no_grad():
        return model(prepare(volumes))[1].float()


def graph_batch(cohort: Cohort, split: Split, size: int) -> np.ndarray:
    """Up to ``size`` test scans, balanced over classes, sorted by class."""
    test = np.sort(np.asarray(split.test, dtype=np.int64))
    y = cohort.y[test]
    per = max(1, size // len(cohort.class_names))
    return np.concatenate([test[y == c][:per] for c in range(len(cohort.class_names))])


def write_relation_graphs(cfg: StudyConfig, store: StudyStore, cohort: Cohort, splits: list[Split]) -> Path | None:
    """``graphs.npz``: cosine batch relation graphs G of the teacher and of the students (each
    KD method) of one projection (FuseMe when studied) on the same test batch."""
    proj = "fuseme" if "fuseme" in cfg.projections else cfg.projections[0]
    for r, split in enumerate(splits):
        trials = [Trial(r, "teacher")] + [Trial(r, "student", proj, k) for k in cfg.kd_names]
        if not all(store.is_finished(t) for t in trials):
            continue
        idx = graph_batch(cohort, split, cfg.report.graph_batch)
        vols = np.asarray(cohort.volumes[idx])
        graphs: dict[str, np.ndarray] = {}
        g_teacher = None
        for t in trials:
            emb = embeddings(load_checkpoint(store.model_dir(t) / "best.pt"), vols)
            g = graph_affinity(emb, "cosine")
            if t.kind == "teacher":
                g_teacher = g
                graphs["3D teacher"] = g.numpy()
            else:
                mse = float(((g - g_teacher) ** 2).mean()) if g_teacher is not None else float("nan")
                label = "no KD" if t.kd == "none" else f"KD {t.kd}"
                graphs[f"{proj}, {label} | MSE to teacher {mse:.4f}"] = g.numpy()
        path = store.root / "graphs.npz"
        with atomic_file(path, mode="wb") as fh:
            np.savez(fh, labels=cohort.y[idx], repeat=np.int64(r), **graphs)
        return path
    return None
