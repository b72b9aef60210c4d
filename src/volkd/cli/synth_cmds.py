"""synth: generate the built-in DaTscan-like synthetic cohort (registered on the shared typer app)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from volkd.cli.app import app
from volkd.atomic import check_output, probe_writable
from volkd.errors import ConfigError

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console()


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Cohort directory to create."),
    n_subjects: int = typer.Option(200, "--n-subjects", help="Number of subjects (some have several visits)."),
    modality: str = typer.Option("spect", "--modality", help="spect (DaTscan-like) or pet (AV133-like)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same cohort byte for byte)."),
    grid: int = typer.Option(64, "--grid", help="Cubic grid size in voxels over the MNI field of view."),
    pd_fraction: float = typer.Option(0.6, "--pd-fraction", help="Fraction of subjects with PD (0–1, exclusive)."),
    difficulty: str = typer.Option("default", "--difficulty", help="easy, default or hard."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Also write scans as nifti or dicom in the PPMI layout (DIR/ppmi)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Generate a synthetic DaTscan-like cohort (PD vs control) with a PNG preview."""
    from volkd.data.synth import synthesize
    from volkd.data.synth_export import write_synthetic

    if fmt is not None and fmt not in ("nifti", "dicom"):
        raise ConfigError(f"--format must be 'nifti' or 'dicom', got {fmt!r}")
    check_output(out, force, "cohort")  # fail before spending time on synthesis
    probe_writable(out)
    t0 = time.perf_counter()
    cohort = synthesize(n_subjects=n_subjects, modality=modality, seed=seed, grid=grid,
                        pd_fraction=pd_fraction, difficulty=difficulty)
    t_synth = time.perf_counter() - t0
    extra = {"SWEDD": 2, "Prodromal": 1} if fmt else None
    write_synthetic(cohort, out, force=force, fmt=fmt, seed=seed, extra_groups=extra)  # type: ignore[arg-type]
    s = cohort.scans
    t = Table(title=f"synthetic {modality} cohort → {out}")
    for col in ("class", "subjects", "scans", "borderline subj.", "mean true putamen SBR"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for c in cohort.class_names:
        k = s["label"] == c
        put = s.loc[k, ["true_sbr_putamen_L", "true_sbr_putamen_R"]].to_numpy().mean()
        t.add_row(c, str(s.loc[k, "subject_id"].nunique()), str(int(k.sum())),
                  str(s.loc[k & s["borderline"], "subject_id"].nunique()), f"{put:.2f}")
    console.print(t)
    console.print(f"grid {tuple(cohort.meta.grid_shape)} at {tuple(round(v, 2) for v in cohort.meta.voxel_size_mm)} mm, "
                  f"difficulty {difficulty}, seed {seed}; {len(cohort)} scans in {t_synth:.1f} s "
                  f"({len(cohort) / max(t_synth, 1e-9):.1f} scans/s)")
    console.print(f"preview: {out / 'preview.png'}" + (f"; PPMI-layout {fmt} export: {out / 'ppmi'}" if fmt else ""))
