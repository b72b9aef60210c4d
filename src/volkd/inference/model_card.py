"""A model card (markdown) for an exported checkpoint: data fingerprint, metrics, intended use, limits, input spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from volkd.inference.grid import MAX_FOV_RATIO, MAX_VOXEL_RATIO, MIN_COVERAGE, MIN_VOXEL_RATIO, training_grid


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(rows: dict[str, Any]) -> list[str]:
    out = ["| metric | value |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in rows.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return out


def test_metrics(ck: Any) -> dict[str, Any] | None:
    """Test-partition metrics from the run's ``result.json`` beside the checkpoint, if present."""
    if ck.path is None:
        return None
    f = Path(ck.path).parent / "result.json"
    try:
        return (json.loads(f.read_text()) or {}).get("test_metrics")
    except (OSError, ValueError):
        return None


def _projection_lines(ck: Any, in_graph: bool) -> list[str]:
    spec = ck.projection_spec
    if spec is None:
        return ["- Projection: none (3D teacher: the volume itself, one channel)."]
    keys = ("method", "views", "fusion", "epsilon", "ref_mode", "ref_index", "slab", "axis_range", "out_size", "mask_striatum", "dynamic_minmax")
    desc = ", ".join(f"{k}={spec.get(k)}" for k in keys if k in spec)
    where = "inside the exported graph" if in_graph else (
        "NOT in the graph: a pre-step (normalise, then `volkd.projection.project` with this spec; "
        "`volkd.inference.export.prepare_inputs(checkpoint, volumes)` does both)")
    return [f"- Projection `{spec.get('name') or spec.get('method')}` ({desc}), computed {where}."]


def model_card(ck: Any, export: dict[str, Any] | None = None) -> str:
    """Markdown model card for checkpoint ``ck``; ``export`` is the export record (``export.json``) if any."""
    export = export or {}
    grid = training_grid(ck)
    ms = ck.model_spec
    split = ck.split or {}
    name = f"{ck.kind} {ms.get('arch')} {ms.get('spatial_dims')}D"
    if ck.projection_spec:
        name += f" on {ck.projection_spec.get('name') or ck.projection_spec.get('method')}"
    in_graph = bool(export.get("preprocessing_in_graph", True))
    lines = [f"# Model card: {name}", ""]
    if export:
        lines += [f"Exported as **{export.get('format')}** (`{Path(str(export.get('model_file'))).name}`, "
                  f"sha256 `{export.get('model_sha256', '')[:16]}…`) from `{export.get('checkpoint')}`.", ""]
    lines += ["## Model", "",
              f"- Kind: {ck.kind}; architecture: {ms.get('arch')} ({ms.get('spatial_dims')}D, in_channels={ms.get('in_channels')}, "
              f"n_views={ms.get('n_views')}, width={ms.get('width')}).",
              f"- Classes (output order): {', '.join(f'{i} = {c}' for i, c in enumerate(ck.class_names))}.",
              f"- Best epoch: {ck.epoch}; seed: {ck.seed}."]
    if ck.kd:
        lines.append(f"- Distillation: {ck.kd.get('name')} ({', '.join(f'{k}={v}' for k, v in ck.kd.items() if k != 'name')}); "
                     f"teacher checkpoint sha256 `{(ck.teacher_hash or '')[:16]}…`.")
    lines += ["", "## Training data", "",
              f"- Cohort fingerprint: `{ck.cohort_fingerprint}`.",
              f"- Split: {split.get('kind')} repeat {split.get('repeat')} (seed {split.get('seed')}): "
              f"{len(split.get('train') or [])} training, {len(split.get('val') or [])} validation, "
              f"{len(split.get('test') or [])} test scans; {len(ck.train_subjects)} training subjects.",
              f"- Grid: {list(grid.shape)} voxels of {[round(float(v), 3) for v in grid.voxel_size]} mm, space {grid.space}, "
              f"placement `{grid.placement}`{' (cropped to the brain)' if grid.crop else ''}, modality {grid.modality}"
              + ("" if grid.recorded else " (not recorded in the checkpoint: assumed MNI placement)") + ".", ""]
    lines += ["## Metrics", "", "Validation metrics of the best epoch (from the checkpoint):", ""]
    lines += _table({k: v for k, v in (ck.metrics or {}).items() if k.startswith("val_")}) or ["(none recorded)"]
    tm = test_metrics(ck)
    if tm:
        lines += ["", "Held-out test partition (`result.json` of the training run):", ""] + _table(tm)
    lines += ["", "Metrics come from one split of one cohort; they are not an estimate for other scanners, "
              "reconstructions or populations. Use `volkd run` (repeated splits) for a mean ± CI.", ""]
    shape = export.get("input_shape")
    lines += ["## Input specification", ""]
    if shape:
        lines.append(f"- Input `{export.get('input_name')}`: float32 of shape {shape} (N scans; the batch axis is dynamic).")
    lines += [f"- Each scan must first be placed on the training grid ({list(grid.shape)}, affine "
              f"{[[round(float(a), 4) for a in row] for row in grid.affine[:3]]}) in canonical RAS+ orientation, as "
              "`volkd predict` does (`volkd.inference.grid.place_on_grid`), raw intensities (no normalisation).",
              f"- Normalisation: `{ck.normalizer.get('name')}` with the training statistics, "
              + ("inside the graph." if in_graph else "part of the pre-step below.")]
    lines += _projection_lines(ck, in_graph)
    lines += ["- Output `probabilities`: softmax over the classes above, shape (N, "
              f"{len(ck.class_names)}).", ""]
    lines += ["## Intended use", "",
              f"Research on {'brain scans (modality not recorded)' if grid.modality == 'unknown' else grid.modality + ' brain scans'} in {grid.space} space: classifying scans into "
              f"{' / '.join(ck.class_names)} as the training cohort was labelled, comparing models, studying "
              "3D-to-2D distillation. Not a medical device: not for diagnosis or treatment decisions.", "",
              "## Limits", "",
              "- Only scans like the training scans: same modality, tracer, reconstruction and spatial normalisation. "
              f"`volkd predict` refuses scans whose voxel size differs by more than {MIN_VOXEL_RATIO:g}×–{MAX_VOXEL_RATIO:g}× "
              f"from the grid's, that cover < {MIN_COVERAGE:.0%} of the field of view (MNI placement) or whose field of view "
              f"differs by > {MAX_FOV_RATIO:g}× (native placement); the exported model performs no such check.",
              "- Subjects of the training data must not be used to evaluate it (their IDs are in the checkpoint; "
              "`volkd predict` warns).",
              "- Probabilities are not calibrated for other populations or prevalences.",
              "- A 2D student sees only its projections of the volume; findings outside them are invisible to it.", ""]
    lines += ["## Versions", "", f"- Training: {', '.join(f'{k} {v}' for k, v in (ck.versions or {}).items())}."]
    if export.get("export_versions"):
        lines.append(f"- Export: {', '.join(f'{k} {v}' for k, v in export['export_versions'].items())}.")
    if export:
        lines += ["", "## Verification", "",
                  f"Exported outputs vs PyTorch (`volkd.train.predict_proba`) on {export.get('n_checked')} random valid inputs: "
                  f"max |Δ| = {export.get('max_abs_diff'):.3g} (tolerance 1e-4)."]
        for note in export.get("notes") or []:
            lines.append(f"- Note: {note}")
    return "\n".join(lines) + "\n"
