"""Clean starts and exits of a study: nothing is created before the config and data validate, an
empty YAML is an error, ``--force`` only ever clears a volkd study, leftovers of killed runs are
removed, and ``volkd run`` exits 3 when a trial failed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from volkd.cli import app
from volkd.errors import CohortError, ConfigError, OutputError
from volkd.study import StudyOutcome, run_study
from volkd.experiment.store import StudyStore
from tests.conftest import make_cohort, tiny_study_config


def test_a_start_with_a_bad_dataset_path_creates_nothing(tmp_path):
    cfg = tiny_study_config(dataset={"kind": "cohort", "path": str(tmp_path / "nowhere")})
    with pytest.raises(CohortError, match="nowhere: not a cohort directory"):
        run_study(cfg, tmp_path / "study", progress=False)
    assert not (tmp_path / "study").exists() and list(tmp_path.iterdir()) == []


def test_a_folder_left_by_a_failed_start_accepts_the_fixed_config(tmp_path):
    """A study folder without any trial result (a start killed early, or made by an older volkd before it
    validated first) holds nothing to mix: the corrected config takes it over."""
    old = tiny_study_config(dataset={"kind": "cohort", "path": str(tmp_path / "nowhere")})
    StudyStore.open(tmp_path / "study", old)
    fixed = tiny_study_config()
    store = StudyStore.open(tmp_path / "study", fixed)
    assert store.stored_hash() == fixed.config_hash()
    (store.trials_dir / "r00-sbr.json").write_text('{"status": "ok"}')
    with pytest.raises(ConfigError, match="holds results of a different study config"):  # with results: never mixed
        StudyStore.open(tmp_path / "study", old)


def test_force_never_clears_a_folder_that_is_not_a_study(tmp_path):
    mine = tmp_path / "mine"
    (mine / "figures").mkdir(parents=True)
    (mine / "report.md").write_text("my own report")  # named like a study output, but not volkd's
    for force in (False, True):
        with pytest.raises(ConfigError, match="is not a volkd study folder.*never other files"):
            StudyStore.open(mine, tiny_study_config(), force=force)
    assert (mine / "report.md").read_text() == "my own report" and (mine / "figures").is_dir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        StudyStore.open(tmp_path / "afile", tiny_study_config(), force=True)


def test_force_clears_a_study_and_only_its_outputs(tmp_path):
    store = StudyStore.open(tmp_path / "study", tiny_study_config())
    (store.trials_dir / "r00-sbr.json").write_text('{"status": "ok"}')
    (store.root / "my_notes.txt").write_text("kept")
    store = StudyStore.open(tmp_path / "study", tiny_study_config(seed=5), force=True)
    assert not list(store.trials_dir.iterdir()) and (store.root / "my_notes.txt").read_text() == "kept"


def test_a_study_never_writes_into_its_cohort(tmp_path):
    make_cohort(n_subjects=16, visits=1, grid=8).save(tmp_path / "c")
    cfg = tiny_study_config(dataset={"kind": "cohort", "path": str(tmp_path / "c")}, baselines=["majority"])
    for out in (tmp_path / "c", tmp_path):
        with pytest.raises(OutputError, match="this command's input"):
            run_study(cfg, out, force=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cohort.json", "scans.csv", "volumes.npy"]


def test_empty_or_non_mapping_yaml_is_an_error_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text, says in (("empty.yaml", "", "the study config is empty"), ("list.yaml", "- 1\n", "expected a mapping")):
        (tmp_path / name).write_text(text)
        r = CliRunner().invoke(app, ["run", name])
        assert isinstance(r.exception, ConfigError) and says in str(r.exception)
    assert not (tmp_path / "volkd-runs").exists()


def _outcome(tmp_path, n_failed: int) -> StudyOutcome:
    import pandas as pd

    return StudyOutcome(tmp_path, pd.DataFrame(), tmp_path / "report.html", tmp_path / "report.md", 5, 5, 0, n_failed, 1.0)


@pytest.mark.parametrize("n_failed, code", [(0, 0), (2, 3)])
def test_run_exits_3_when_a_trial_failed(tmp_path, monkeypatch, capsys, n_failed, code):
    from volkd.cli import main

    monkeypatch.setattr("volkd.study.run_study", lambda *a, **k: _outcome(tmp_path, n_failed))
    monkeypatch.setattr("volkd.report.console.headline_rich", lambda df: "")
    monkeypatch.setattr("sys.argv", ["volkd", "run", "--out", str(tmp_path / "s")])
    if code:
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == 3 and "2 of 5 trial(s) failed" in capsys.readouterr().err
    else:
        main()  # returns normally: exit 0


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_failed_trials_give_exit_3_and_stale_temps_are_cleaned(tmp_path, monkeypatch):
    from tests.test_predict import tiny_mni_cohort
    import volkd.experiment.trial_exec as runner

    tiny_mni_cohort().save(tmp_path / "c")
    cfg_yaml = tmp_path / "study.yaml"
    cfg_yaml.write_text(f"name: s\ndataset: {{kind: cohort, path: {tmp_path / 'c'}}}\nsplit: {{repeats: 1}}\n"
                        "projections: [mip]\nkd: [{name: none}]\ntraining: {epochs: 1, batch_size: 8}\n"
                        "report: {latency_runs: 1, graph_batch: 4, gallery_scans: 1}\n")
    study = tmp_path / "study"
    (study / "trials").mkdir(parents=True)  # a study folder a killed run left temp files in
    stale = [study / "trials" / f".r00-sbr.json.tmp-{_dead_pid()}-x", study / f".report.md.tmp-{_dead_pid()}-y"]
    for p in stale:
        p.write_text("half written")

    def broken(*a, **k):
        raise RuntimeError("simulated training crash")

    monkeypatch.setattr(runner, "train_teacher", broken)
    monkeypatch.setattr(runner, "train_student", broken)
    r = CliRunner().invoke(app, ["run", str(cfg_yaml), "--out", str(study), "--no-progress"])
    assert r.exit_code == 3, r.output
    assert "2 of 4 trial(s) failed" in r.output  # teacher and student; the SBR and majority baselines ran
    assert not any(p.exists() for p in stale)
    assert (study / "report.html").is_file()
