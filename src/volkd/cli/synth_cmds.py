"""synth: generate the built-in DaTscan-like synthetic cohort (registered on the shared typer app)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from volkd.cli.app import app
from volkd.atomic import check_output, probe_writable
from volkd.errors import ConfigError

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).
if TYPE_CHECKING:
    from volkd.data.cohort import Cohort

console = Console()


@app.command("synth")
def synth(
    out: Optional[Path] = typer.Option(None, "--out", help="Cohort directory to create (optional with --report)."),
    n_subjects: int = typer.Option(200, "--n-subjects", help="Number of subjects (some have several visits)."),
    modality: str = typer.Option("spect", "--modality", help="spect (DaTscan-like) or pet (AV133-like)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same cohort byte for byte)."),
    grid: int = typer.Option(64, "--grid", help="Cubic grid size in voxels over the MNI field of view."),
    pd_fraction: float = typer.Option(0.6, "--pd-fraction", help="Fraction of subjects with PD (0–1, exclusive); PPMI: 0.794 (816/1028)."),
    difficulty: str = typer.Option("default", "--difficulty", help="easy, default (calibrated, PPMI-like separability) or hard (the earlier, uncalibrated cohort)."),
    visits: int = typer.Option(3, "--visits", help="Most scans per subject (1 = baseline only)."),
    report: bool = typer.Option(False, "--report", help="Print SBRs measured on the images (atlas ROIs) vs the literature targets, per class."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Also write scans as nifti or dicom in the PPMI layout (DIR/ppmi)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Generate a synthetic DaTscan-like cohort (PD vs control) with a PNG preview; --report checks its calibration."""
    from volkd.data.synth import synthesize
    from volkd.data.synth_export import write_synthetic

    if fmt is not None and fmt not in ("nifti", "dicom"):
        raise ConfigError(f"--format must be 'nifti' or 'dicom', got {fmt!r}")
    if out is None and not report:
        raise ConfigError("--out is required (the cohort directory to create), unless --report only prints the calibration")
    if out is None and fmt is not None:
        raise ConfigError("--format needs --out (the export is written into the cohort directory)")
    if out is not None:
        check_output(out, force, "cohort")  # fail before spending time on synthesis
        probe_writable(out)
    t0 = time.perf_counter()
    cohort = synthesize(n_subjects=n_subjects, modality=modality, seed=seed, grid=grid,
                        pd_fraction=pd_fraction, difficulty=difficulty, visits=visits)
    t_synth = time.perf_counter() - t0
    if out is not None:
        extra = {"SWEDD": 2, "Prodromal": 1} if fmt else None
        write_synthetic(cohort, out, force=force, fmt=fmt, seed=seed, extra_groups=extra)  # type: ignore[arg-type]
    s = cohort.scans
    t = Table(title=f"synthetic {modality} cohort" + (f" → {out}" if out is not None else ""))
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
    if out is not None:
        console.print(f"preview: {out / 'preview.png'}" + (f"; PPMI-layout {fmt} export: {out / 'ppmi'}" if fmt else ""))
    if report:
        print_calibration(cohort)


def print_calibration(cohort: "Cohort") -> None:
    """Print :func:`volkd.evaluate.synth_check.calibration_table` as a table."""
    from volkd.evaluate.synth_check import TOLERANCE, calibration_table

    tab = calibration_table(cohort)
    syn = cohort.meta.extra.get("synth", {})
    t = Table(title=f"SBR measured on the images (atlas ROIs, occipital reference; baseline scans) vs target, "
                    f"{syn.get('modality', '?')} {'×'.join(str(g) for g in cohort.meta.grid_shape)}", box=box.SIMPLE)
    for col in ("quantity", "class", "n", "target", "measured", "Δ mean", "Δ sd", f"±{TOLERANCE:.0%}"):
        t.add_column(col, justify="left" if col in ("quantity", "class") else "right", no_wrap=col != "quantity")
    for r in tab.itertuples(index=False):
        t.add_row(r.quantity, r[1], str(r.n), f"{r.target_mean:.3f} ± {r.target_sd:.3f}", f"{r.measured_mean:.3f} ± {r.measured_sd:.3f}",
                  f"{r.dev_mean:+.1%}", f"{r.dev_sd:+.1%}", "yes" if r.within else "NO")
    console.print(t)
    source = (syn.get("contrast") or {}).get("source")
    if source:
        console.print(f"targets: {source}")
    if not syn.get("calibrate", True):
        console.print("this cohort is not calibrated (difficulty 'hard' or calibrate=false): its SBRs were set before blur, "
                      "so the image SBRs fall short of the targets")
    small = int(tab["n"].min()) if len(tab) else 0
    if small < 1000:
        console.print(f"note: {small} baseline scans in the smallest class; the sd of a skewed index (asymmetry) "
                      "needs ≈ 1000+ per class to be within a few %")
