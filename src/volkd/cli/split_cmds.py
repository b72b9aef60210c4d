"""split commands (registered on the shared typer app): ``volkd split``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from volkd.atomic import check_output, probe_writable
from volkd.cli.app import app
from volkd.data.cohort import Cohort
from volkd.errors import ConfigError

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console()


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--fractions: expected three comma-separated numbers such as 0.6,0.2,0.2, got {text!r}") from None


@app.command("split")
def split(
    cohort: Path = typer.Argument(..., help="Cohort directory."),
    out: Path = typer.Option(..., "--out", help="Split file to write (JSON)."),
    protocol: str = typer.Option("holdout", "--protocol", help="holdout (repeated, the study's), kfold or official (the cohort's split column)."),
    repeats: int = typer.Option(20, "--repeats", help="Hold-out repeats."),
    fractions: str = typer.Option("0.6,0.2,0.2", "--fractions", help="Hold-out train,val,test fractions of subjects."),
    k: int = typer.Option(5, "--k", help="Folds for --protocol kfold."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="k-fold: share of non-test subjects used for validation."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing split file."),
) -> None:
    """Make subject-level stratified splits (no subject in two partitions) and write them."""
    from volkd.data.splits import make_splits, save_splits, split_counts

    check_output(out, force, sources=[cohort])
    probe_writable(out)
    c = Cohort.load(cohort)
    splits, params = make_splits(c, protocol, n_repeats=repeats, fractions=_fractions(fractions), k=k,
                                 val_fraction=val_fraction, seed=seed)
    save_splits(out, splits, c, protocol=params, force=force)
    names = "/".join(c.class_names)
    t = Table(title=f"{protocol} splits of {cohort}: scans / subjects ({names} scans)")
    t.add_column("repeat", justify="right")
    for p in ("train", "val", "test"):
        t.add_column(p, justify="right")
    for s in splits:
        cnt = split_counts(c, s)
        t.add_row(str(s.repeat), *(
            f"{cnt[p]['scans']} / {cnt[p]['subjects']} ({'/'.join(str(v) for v in cnt[p]['per_class'].values())})"
            for p in ("train", "val", "test")))
    console.print(t)
    console.print(f"no subject in two partitions; wrote {len(splits)} split(s) to {out}")
