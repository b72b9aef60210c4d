"""Which sagittal reference and which dynamic-image range should the presets use? Measured, not assumed.

Trains no-KD students of the quick profile (light 2D CNN, its training budget, reference
normalisation and augmentation) on the default synthetic cohort over subject-level hold-out
repeats, for each candidate projection:

  * fuseme / early / joint with ``ref_mode: midline`` (one sagittal view between the striata)
    vs ``ref_mode: hemispheres`` (one sagittal view per striatum),
  * dynamic with the whole axis vs ``slab: striatum`` (the slices spanning the striatum + margin).

Choice rule (fixed before running): per group, the candidate with the lower mean **validation
loss** (the quantity early stopping monitors; at the best epoch of each repeat) wins; the paired
difference over repeats (same splits, same seeds) is printed with its standard error, next to
validation ROC AUC. Test metrics are printed for the record, never used to choose. One torch
thread; prints CPU and wall time.

Usage: OMP_NUM_THREADS=1 python benchmarks/projection_choice.py [--grid 32] [--n-subjects 200] [--repeats 3]
       [--only fuseme,early,joint,dynamic] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from volkd.data.splits import holdout_splits
from volkd.data.synth import synthesize
from volkd.evaluate import classification_metrics
from volkd.experiment.config import load_profile
from volkd.projection import preset
from volkd.train import train_student
from volkd.train.api import student_model_spec

CANDIDATES = {
    "fuseme": [("fuseme", {"ref_mode": "midline"}), ("fuseme", {"ref_mode": "hemispheres"})],
    "early": [("early", {"ref_mode": "midline"}), ("early", {"ref_mode": "hemispheres"})],
    "joint": [("joint", {"ref_mode": "midline"}), ("joint", {"ref_mode": "hemispheres"})],
    "dynamic": [("dynamic", {"slab": None}), ("dynamic", {"slab": "striatum"})],
}


def best_val(history: list[dict], monitor: str) -> dict[str, float]:
    """The validation metrics of the epoch early stopping kept (lowest val_loss / highest other)."""
    rows = [r for r in history if monitor in r]
    best = min(rows, key=lambda r: r[monitor]) if monitor.endswith("loss") else max(rows, key=lambda r: r[monitor])
    return {k: float(v) for k, v in best.items() if k.startswith("val_") and isinstance(v, (int, float))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--n-subjects", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override the quick profile's epochs")
    ap.add_argument("--only", default="fuseme,early,joint,dynamic")
    ap.add_argument("--out", type=Path, default=None, help="also write the per-repeat results as JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_profile("quick")
    cohort = synthesize(n_subjects=a.n_subjects, grid=a.grid, modality="spect", seed=0)
    splits = holdout_splits(cohort, n_repeats=a.repeats, fractions=(0.6, 0.2, 0.2), seed=0)
    print(f"# cohort: default synthetic SPECT, {a.n_subjects} subjects = {len(cohort)} scans at {a.grid}³; "
          f"{a.repeats} subject-level hold-out repeats; quick-profile no-KD students, 1 torch thread")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in a.only.split(","):
            for name, overrides in CANDIDATES[group]:
                spec = preset(name, **overrides)
                shown = f"{name} " + " ".join(f"{k}={v}" for k, v in overrides.items())
                rows = []
                t_cpu, t_wall = time.process_time(), time.perf_counter()
                for split in splits:
                    tc = {**cfg.train_dict("student", split.repeat), "progress": False}
                    if a.epochs:
                        tc["epochs"] = a.epochs
                    mspec = student_model_spec("lightcnn", spec, len(cohort.class_names), width=cfg.student.width,
                                               stem_stride=cfg.student.stem_stride, stem_kernel=cfg.student.stem_kernel)
                    res = train_student(cohort, split, spec, mspec, "none", None, tc, Path(tmp) / f"{spec.label}-{split.repeat}")
                    pred = res.test_predictions
                    test = classification_metrics(pred["y_true"].to_numpy(), pred[["proba_control", "proba_PD"]].to_numpy())
                    rows.append({"val": best_val(res.history, res.monitor), "test": test})
                cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
                val_auc = np.array([r["val"].get("val_auc", np.nan) for r in rows])
                val_loss = np.array([r["val"].get("val_loss", np.nan) for r in rows])
                test_auc = np.array([r["test"].get("roc_auc", np.nan) for r in rows])
                test_f1 = np.array([r["test"].get("f1_weighted", np.nan) for r in rows])
                print(f"{shown:<28} val AUC {val_auc.mean():.3f} ± {val_auc.std(ddof=1):.3f}  val loss {val_loss.mean():.3f}  | "
                      f"test AUC {test_auc.mean():.3f} ± {test_auc.std(ddof=1):.3f}  test F1w {test_f1.mean():.3f}  "
                      f"({cpu:.0f} s CPU, {wall:.0f} s wall)", flush=True)
                records.append({"group": group, "label": shown, "spec": overrides, "repeats": rows, "cpu_s": cpu, "wall_s": wall})
    print("# paired over repeats (second − first): Δ val loss ± SE, Δ val AUC ± SE, Δ test AUC ± SE; lower val loss wins")
    for group in a.only.split(","):
        pair = [r for r in records if r["group"] == group]
        if len(pair) != 2:
            continue

        def diff(part: str, key: str) -> str:
            d = np.array([b[part].get(key, np.nan) - x[part].get(key, np.nan) for x, b in zip(pair[0]["repeats"], pair[1]["repeats"])])
            return f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}"

        losses = [np.mean([r["val"]["val_loss"] for r in c["repeats"]]) for c in pair]
        print(f"{group:<8} {pair[1]['label']} vs {pair[0]['label']}: Δ val loss {diff('val', 'val_loss')}, "
              f"Δ val AUC {diff('val', 'val_auc')}, Δ test AUC {diff('test', 'roc_auc')} → {pair[int(np.argmin(losses))]['label']}")
    if a.out:
        a.out.write_text(json.dumps(records, indent=1, default=float))


if __name__ == "__main__":
    main()
