"""Commands for using a trained model on new scans: ``volkd predict``, ``volkd explain``, ``volkd export``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from volkd.cli.app import app

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console(stderr=True)

_CKPT = typer.Argument(..., help="Checkpoint (best.pt of `volkd train-teacher` / `volkd train-student`).")
_SCANS = typer.Argument(..., help="NIfTI files, DICOM series folders, NPZ/NPY arrays (MedMNIST layout), folders of them, or cohort directories.")
_FORCE = typer.Option(False, "--force", help="Replace existing outputs.")


def _show_warnings(caught: list[Any]) -> None:
    from volkd.inference.predict import PredictionWarning

    for w in caught:
        if not issubclass(w.category, PredictionWarning):
            continue
        console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)


def _show_skipped(skipped: list[Any], where: Path | None) -> None:
    for s in skipped[:10]:
        console.print(f"[yellow]skipped[/] {s.source}: {s.reason}", highlight=False, soft_wrap=True)
    if len(skipped) > 10:
        console.print(f"… and {len(skipped) - 10} more", highlight=False)
    if skipped and where is not None:
        console.print(f"{len(skipped)} input(s) skipped; reasons in {where}", highlight=False, soft_wrap=True)


@app.command("predict")
def predict_cmd(ckpt: Path = _CKPT, scans: list[Path] = _SCANS,
                out: Path = typer.Option(..., "--out", help="Predictions CSV (skipped inputs go to <out stem>.skipped.csv)."),
                batch_size: int = typer.Option(16, "--batch-size", help="Scans per forward pass."), force: bool = _FORCE) -> None:
    """Class probabilities for new scans, preprocessed exactly as the model's training data."""
    from volkd.inference.predict import predict_to_csv, skipped_path

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, skipped = predict_to_csv(ckpt, scans, out, force=force, batch_size=batch_size)
    _show_warnings(caught)
    _show_skipped(skipped, skipped_path(out))
    counts = ", ".join(f"{k} {v}" for k, v in df["predicted"].value_counts().items())
    console.print(f"predicted {len(df)} scan(s) ({counts}) → {out}", highlight=False, soft_wrap=True)


@app.command("explain")
def explain_cmd(ckpt: Path = _CKPT, scans: list[Path] = _SCANS,
                out: Path = typer.Option(..., "--out", help="Output folder for Grad-CAM overlays (PNG), maps (NIfTI/NPZ) and explain.csv."),
                class_name: Optional[str] = typer.Option(None, "--class", help="Class to explain (default: the predicted one)."),
                force: bool = _FORCE) -> None:
    """Grad-CAM maps (MONAI) of the model's decision for each scan."""
    from volkd.inference.explain import explain_scans

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, skipped = explain_scans(ckpt, scans, out, class_name=class_name, force=force)
    _show_warnings(caught)
    _show_skipped(skipped, out / "skipped.csv")
    console.print(f"explained {len(results)} scan(s) → {out}", highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(ckpt: Path = _CKPT, format: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
               out: Path = typer.Option(..., "--out", help="Output folder (model file, model_card.md, export.json)."),
               force: bool = _FORCE) -> None:
    """Export a model (with its normalisation and projection) to ONNX or TorchScript, checked against PyTorch."""
    from volkd.inference.export import export_model

    res = export_model(ckpt, out, format=format, force=force)
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"exported {res.model_file} (input {res.input_name} {res.input_shape}; max |Δ| vs PyTorch "
                  f"{res.max_abs_diff:.2g}); model card {res.card_file}", highlight=False, soft_wrap=True)
