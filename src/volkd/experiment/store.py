"""The study folder: one atomic JSON (+ predictions CSV) per trial, resume, config-hash guard.

Layout::

    <study>/study.json           config hash, name, creation provenance
    <study>/config.yaml          the annotated config that produced the results
    <study>/trials/<id>.json     one finished (or failed) trial; written last = commit marker
    <study>/trials/<id>.predictions.csv
    <study>/models/<id>/         checkpoints (teachers are shared by their repeat's students)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from volkd.atomic import atomic_file, write_json, write_text
from volkd.errors import ConfigError, OutputError
from volkd.experiment.config import StudyConfig, annotated_yaml
from volkd.experiment.trials import Trial
from volkd.provenance import provenance

STUDY_FILE = "study.json"
CONFIG_FILE = "config.yaml"
TRIALS_DIR = "trials"
MODELS_DIR = "models"
#: Files and folders a study writes; ``--force`` removes exactly these before starting over.
STUDY_OUTPUTS = (
    STUDY_FILE, CONFIG_FILE, TRIALS_DIR, MODELS_DIR, "figures", "report.md", "report.html",
    "results.csv", "summary.csv", "external.csv", "comparisons.csv", "headline.csv", "cost.csv",
    "splits.json", "environment.json", "cache",
)


def next_free_path(root: Path) -> Path:
    """``root`` if unused, else ``root-2``, ``root-3``, … (for ``--new``)."""
    if not root.exists():
        return root
    i = 2
    while (cand := root.with_name(f"{root.name}-{i}")).exists():
        i += 1
    return cand


class StudyStore:
    """Reads and writes a study folder; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: str | Path, cfg: StudyConfig, force: bool = False, new: bool = False) -> "StudyStore":
        """Create or resume the study at ``root``.

        A folder made by a different config is refused (its results must not be mixed)
        unless ``new`` (use the next free ``root-N``), ``force`` (discard its results) or it holds
        no trial result yet (a start that failed: nothing to mix). A folder that is not a volkd
        study (no study.json or trials/) is refused even with ``force``: volkd never deletes
        files it did not write.
        """
        root = Path(root)
        if new:
            root = next_free_path(root)
        store = cls(root)
        if root.exists() and not root.is_dir():
            raise OutputError(f"{root}: is a file, not a study folder; choose another --out")
        ours = (root / STUDY_FILE).is_file() or (root / TRIALS_DIR).is_dir()
        if root.exists() and any(root.iterdir()) and not ours:
            raise ConfigError(
                f"{root}: exists and is not a volkd study folder (no {STUDY_FILE}); choose another --out "
                "(--force replaces only a volkd study folder, never other files)"
            )
        stored = None if force else store.stored_hash()
        if stored is not None and stored != cfg.config_hash() and not any(store.trials_dir.glob("*.json")):
            force = True  # a start that failed before any trial finished: nothing to mix, start afresh
            stored = None
        if force and root.exists():
            store.clear()
        if stored is not None and stored != cfg.config_hash():
            raise ConfigError(
                f"{root}: holds results of a different study config (hash {stored[:12]} ≠ {cfg.config_hash()[:12]}); "
                "results of different configs are never mixed: pass --new to start a new folder next to it, "
                "--force to discard the old results, or --out to choose another folder"
            )
        store._initialise(cfg, resumed=stored is not None)
        return store

    def stored_hash(self) -> str | None:
        """The config hash recorded in ``study.json`` (None for a new folder)."""
        p = self.root / STUDY_FILE
        if not p.is_file():
            return None
        try:
            return str(json.loads(p.read_text())["config_hash"])
        except (ValueError, KeyError):
            raise ConfigError(f"{p}: unreadable study record; pass --force to start this study over") from None

    def clear(self) -> None:
        """Remove everything a study wrote in this folder (used by ``--force``)."""
        for name in STUDY_OUTPUTS:
            p = self.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _initialise(self, cfg: StudyConfig, resumed: bool) -> None:
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if not resumed:
            write_json(self.root / STUDY_FILE, {"name": cfg.name, "config_hash": cfg.config_hash(), "created": provenance()})
        write_text(self.root / CONFIG_FILE, annotated_yaml(cfg, header=f"volkd study config of {self.root} (hash {cfg.config_hash()[:12]})"))

    # ----------------------------------------------------------------- paths
    @property
    def trials_dir(self) -> Path:
        return self.root / TRIALS_DIR

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    def result_path(self, trial: Trial | str) -> Path:
        tid = trial if isinstance(trial, str) else trial.trial_id
        return self.trials_dir / f"{tid}.json"

    def predictions_path(self, trial: Trial | str) -> Path:
        tid = trial if isinstance(trial, str) else trial.trial_id
        return self.trials_dir / f"{tid}.predictions.csv"

    def model_dir(self, trial: Trial) -> Path:
        return self.models_dir / trial.trial_id

    # --------------------------------------------------------------- results
    def load_result(self, trial: Trial | str) -> dict[str, Any] | None:
        """The stored record of a trial, or None when it has not finished."""
        p = self.result_path(trial)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None  # cannot happen with atomic writes; treat as unfinished

    def is_finished(self, trial: Trial) -> bool:
        """True when the trial succeeded before (failed trials are retried on resume)."""
        rec = self.load_result(trial)
        return rec is not None and rec.get("status") == "ok"

    def save_result(self, trial: Trial, record: dict[str, Any], predictions: pd.DataFrame | None = None) -> Path:
        """Store a trial: predictions CSV first, then the JSON record (the commit marker)."""
        if predictions is not None:
            with atomic_file(self.predictions_path(trial)) as fh:
                predictions.to_csv(fh, index=False)
        rec = {"trial_id": trial.trial_id, "repeat": trial.repeat, "kind": trial.kind, "method": trial.method,
               "projection": trial.projection, "kd": trial.kd, **record}
        write_json(self.result_path(trial), rec)
        return self.result_path(trial)

    def load_all(self) -> list[dict[str, Any]]:
        """Every stored trial record, sorted by trial ID."""
        out = []
        for p in sorted(self.trials_dir.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except ValueError:
                continue
        return out

    def load_predictions(self, trial_id: str) -> pd.DataFrame | None:
        p = self.predictions_path(trial_id)
        return pd.read_csv(p) if p.is_file() else None
