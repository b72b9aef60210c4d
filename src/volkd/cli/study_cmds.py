"""study commands: ``volkd run`` (a whole distillation study + report) and ``volkd init-config``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from volkd.cli.app import app

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

#: Exit code of ``volkd run`` when at least one trial failed (the report is still written).
FAILED_TRIALS_EXIT = 3


@app.command("run", help="Run (or resume) a 3D-to-2D distillation study and write its report (default: the quick profile). "
             "Exit code 3 when a trial failed.")
def run_cmd(
    config: Optional[Path] = typer.Argument(None, help="Study YAML (see `volkd init-config`); omit to use --profile."),
    profile: str = typer.Option("quick", "--profile", "-p", help="Built-in profile when no CONFIG is given: quick or paper."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study folder (default: volkd-runs/<profile or config file name>)."),
    new: bool = typer.Option(False, "--new", help="Start a new folder (<out>-2, …) instead of resuming the existing one."),
    force: bool = typer.Option(False, "--force", help="Discard the results already in the study folder and start over (only a volkd study folder)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not show the live progress view."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help="Where trials run: local or ray (default: the config's execution.executor, local)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (HOST:PORT or auto); without it Ray starts locally."),
) -> None:
    from volkd.experiment.config import load_config, load_profile
    from volkd.study import run_study
    from volkd.report.console import headline_rich

    cfg = load_config(config) if config is not None else load_profile(profile)
    out = out or Path("volkd-runs") / (config.stem if config is not None else profile)
    console = Console()
    res = run_study(cfg, out, force=force, new=new, progress=not no_progress, console=console,
                    executor=executor, address=address)
    console.print(headline_rich(res.headline))
    console.print(f"{res.n_run} trial(s) run, {res.n_skipped} resumed from earlier runs, {res.n_failed} failed; "
                  f"{res.wall_seconds:.0f} s")
    console.print(f"report: [bold]{res.report_html}[/] (and {res.report_md.name}, results.csv, summary.csv)")
    if res.n_failed:
        Console(stderr=True).print(f"[bold red]error:[/] {res.n_failed} of {res.n_trials} trial(s) failed (see the report's "
                                   "failures table); run again to retry them", highlight=False, soft_wrap=True)
        raise typer.Exit(FAILED_TRIALS_EXIT)


@app.command("init-config", help="Write an annotated study config (a comment above every key) to edit and pass to `volkd run`; "
                                   "with --cohort, fitted to that cohort (every choice says why).")
def init_config_cmd(
    out: Path = typer.Option(Path("study.yaml"), "--out", "-o", help="Where to write the YAML file."),
    profile: str = typer.Option("quick", "--profile", "-p", help="Profile to start from: quick or paper (with --cohort: its budget)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="A cohort folder (volkd import / volkd synth): fit normaliser, baselines, split, headline metric and networks to it."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    if cohort is None:
        from volkd.experiment.config import write_config

        path = write_config(out, profile, force=force)
        typer.echo(f"wrote {path}; edit it, then: volkd run {path}")
        return
    from volkd.experiment.cohort_config import write_cohort_config

    fitted = write_cohort_config(cohort, out, profile, force=force)
    typer.echo(f"wrote {out}, fitted to {cohort}:")
    for key, lines in fitted.reasons.items():
        for line in lines:
            typer.echo(f"  {key}: {line}")
    typer.echo(f"edit it, then: volkd run {out}")
