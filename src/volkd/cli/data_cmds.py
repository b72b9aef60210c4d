"""Data commands: info (and, from the data modules, import, synth, split)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from volkd.cli.app import app
from volkd.data.cohort import Cohort

console = Console()


@app.command("info")
def info(
    cohort: Path = typer.Argument(..., help="Cohort directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    verify: bool = typer.Option(False, "--verify", help="Recompute the content hashes of volumes.npy and scans.csv and compare them with cohort.json (about 1 s per GB); exit 2 naming what changed."),
) -> None:
    """Summarise a cohort: scans and subjects per class, visits, intensities."""
    loaded = Cohort.load(cohort, verify=verify)
    s = loaded.summary()
    fingerprint = loaded.meta.fingerprint
    if verify:
        s["verified"] = bool(fingerprint)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    t = Table(title=f"cohort {cohort}", show_header=True)
    t.add_column("class")
    t.add_column("scans", justify="right")
    t.add_column("subjects", justify="right")
    for c, n in s["scans_per_class"].items():
        t.add_row(c, str(n), str(s["subjects_per_class"][c]))
    t.add_row("[bold]total", f"[bold]{s['n_scans']}", f"[bold]{s['n_subjects']}")
    console.print(t)
    v, i = s["visits_per_subject"], s["intensity"]
    console.print(f"grid {tuple(s['grid_shape'])} at {tuple(s['voxel_size_mm'])} mm, modality {s['modality']}")
    console.print(f"visits per subject: min {v['min']}, mean {v['mean']:.2f}, max {v['max']}")
    if "scans_per_split" in s:
        console.print(f"scans per split: {s['scans_per_split']}")
    console.print(
        f"intensity ({i['scans_sampled']} scans sampled): mean {i['mean']:.4g}, sd {i['std']:.4g}, "
        f"p1 {i['p1']:.4g}, p99 {i['p99']:.4g}, range [{i['min']:.4g}, {i['max']:.4g}]"
    )
    if verify and fingerprint:
        console.print(f"verified: the data match cohort.json (fingerprint {fingerprint[:12]})", highlight=False)
    elif verify:
        console.print("not verified: cohort.json records no fingerprint (a cohort written by hand)", highlight=False)
