"""project command: write a projected dataset (images.npy, spec.json, gallery.png) from a cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from volkd.cli.app import app
from volkd.data.cohort import Cohort
from volkd.errors import ConfigError

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console()


def _views(text: str | None) -> list[str] | None:
    return None if not text else [v.strip() for v in text.split(",") if v.strip()]


def _ref(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        view, _, idx = part.partition("=")
        if not idx.strip().lstrip("-").isdigit():
            raise ConfigError(f"--ref: expected VIEW=INDEX[,VIEW=INDEX], e.g. axial=32,coronal=40; got {part!r}")
        out[view.strip()] = int(idx)
    return out


def _size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = text.replace("x", ",").split(",")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (1, 2):
        raise ConfigError(f"--size: expected H,W or one size, e.g. 64,64 or 64; got {text!r}")
    h, w = (int(parts[0]), int(parts[-1]))
    return (h, w)


@app.command("project")
def project_cmd(
    cohort: Path = typer.Argument(..., help="Cohort directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (images.npy, spec.json, scans.csv, projection.json, gallery.png)."),
    method: str = typer.Option("fuseme", "--method", "-m", help="Preset or method: fuseme, early, joint, slice, slices, mip, mean, std, entropy, dynamic; 'all' writes only a gallery of every method."),
    views: str | None = typer.Option(None, "--views", help="Comma-separated views (axial, coronal, sagittal) replacing the preset's."),
    fusion: str | None = typer.Option(None, "--fusion", help="none | early | joint (default: the preset's)."),
    epsilon: int | None = typer.Option(None, "--epsilon", help="ε of 2D+ε: slices c−ε…c+ε."),
    base_method: str | None = typer.Option(None, "--base", help="Method of the early/joint presets (default slice)."),
    ref: str | None = typer.Option(None, "--ref", help="Explicit reference slices, e.g. axial=32,coronal=40 (default: striatum centre)."),
    size: str | None = typer.Option(None, "--size", help="Output image size H,W (default: native, or the largest view's)."),
    mask_striatum: bool = typer.Option(False, "--mask-striatum", help="Crop each image to the striatum's box (+ margin), then resize."),
    no_minmax: bool = typer.Option(False, "--no-minmax", help="Do not min-max scale dynamic images."),
    per_class: int = typer.Option(2, "--per-class", help="Scans of each class in the gallery (0: no gallery)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Project a cohort to 2D images (what the student sees) and write them with a PNG gallery."""
    from volkd.projection import preset
    from volkd.projection.dataset import load_projection, write_method_gallery, write_projection

    c = Cohort.load(cohort)
    fields: dict[str, Any] = {k: v for k, v in dict(
        views=_views(views), fusion=fusion, epsilon=epsilon, method=base_method, ref_index=_ref(ref), out_size=_size(size),
    ).items() if v is not None}
    fields.update(mask_striatum=mask_striatum, dynamic_minmax=not no_minmax)
    if method == "all":
        path = write_method_gallery(c, out, fields.get("views", ["axial", "coronal", "sagittal"]), epsilon=fields.get("epsilon", 1),
                                    force=force, per_class=max(per_class, 1), **{k: fields[k] for k in ("ref_index", "out_size", "mask_striatum", "dynamic_minmax") if k in fields})
        console.print(f"wrote a gallery of every method to {path / 'gallery.png'}")
        return
    spec = preset(method, **fields)
    done = load_projection(write_projection(c, spec, out, force=force, gallery_per_class=per_class or None))
    console.print(f"wrote {len(c)} projections ({done.spec.label}, {tuple(done.images.shape[1:])} per scan, reference slices "
                  f"{done.spec.ref_index} from {done.spec.ref_source}) to {done.path}")
