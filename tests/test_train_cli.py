"""CLI end to end on a saved tiny cohort: train-teacher, then train-student --kd graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import make_cohort
from volkd.train import load_checkpoint

COMMON = ["--model", "lightcnn", "--width", "4", "--batch-size", "8", "--no-progress"]


def volkd(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``volkd ARGS`` in-process; return (exit code, stderr)."""
    from volkd.cli import main

    monkeypatch.setattr(sys, "argv", ["volkd", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_cli_teacher_then_student(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    coh = make_cohort().save(tmp_path / "coh")
    t, s = tmp_path / "teacher", tmp_path / "student"
    code, err = volkd(monkeypatch, capsys, "train-teacher", coh, "--out", t, "--epochs", "2", *COMMON)
    assert code == 0, err
    assert "teacher: best val_loss" in err
    for f in ("best.pt", "last.pt", "history.jsonl", "history.csv", "result.json", "config.json", "split.json", "test_predictions.csv"):
        assert (t / f).is_file(), f
    assert len((t / "history.jsonl").read_text().splitlines()) == 2
    split = json.loads((t / "split.json").read_text())
    assert split["splits"][0]["repeat"] == 0 and len(split["splits"][0]["train"]) + len(split["splits"][0]["val"]) + len(split["splits"][0]["test"]) == 24
    cfg = json.loads((t / "config.json").read_text())
    assert cfg["kind"] == "teacher" and cfg["train_config"]["epochs"] == 2 and "versions" in cfg

    code, err = volkd(monkeypatch, capsys, "train-student", coh, "--out", s, "--projection", "fuseme", "--kd", "graph",
                      "--kd-param", "affinity=knn", "--teacher", t / "best.pt", "--epochs", "3", *COMMON)
    assert code == 0, err
    hist = pd.read_csv(s / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2] and (hist["train_kd"] > 0).all() and "train_kd_fg" in hist
    assert (s / "teacher_cache.pt").is_file()
    ck = load_checkpoint(s / "best.pt")
    assert ck.kd == {**ck.kd, "name": "graph", "affinity": "knn"} and ck.projection_spec["fusion"] == "joint"
    assert ck.split == load_checkpoint(t / "best.pt").split  # same default split for teacher and student
    preds = pd.read_csv(s / "test_predictions.csv")
    assert list(preds.columns) == ["scan_id", "subject_id", "y_true", "y_pred", "proba_control", "proba_PD"]

    # a finished run is never overwritten without --force
    mtime = (t / "best.pt").stat().st_mtime_ns
    code, err = volkd(monkeypatch, capsys, "train-teacher", coh, "--out", t, "--epochs", "1", *COMMON)
    assert code == 2 and "finished training run" in err and "--force" in err
    assert (t / "best.pt").stat().st_mtime_ns == mtime
    code, err = volkd(monkeypatch, capsys, "train-teacher", coh, "--out", t, "--epochs", "1", "--force", *COMMON)
    assert code == 0, err
    assert len((t / "history.jsonl").read_text().splitlines()) == 1
    # bad option values are one-line errors naming the option
    code, err = volkd(monkeypatch, capsys, "train-teacher", coh, "--out", tmp_path / "x", "--optimizer", "sgd", *COMMON)
    assert code == 2 and "optimizer" in err
    code, err = volkd(monkeypatch, capsys, "train-student", coh, "--out", tmp_path / "y", "--kd", "graph", *COMMON)
    assert code == 2 and "needs a teacher checkpoint" in err


@pytest.mark.slow
def test_torchrun_entry_point(tmp_path):
    """``torchrun -m volkd.cli train-teacher ...`` trains with 2 ranks; rank 0 writes."""
    coh = make_cohort().save(tmp_path / "coh")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "volkd.cli",
           "train-teacher", str(coh), "--out", str(tmp_path / "t"), "--epochs", "1", *COMMON]
    p = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for head in ("teacher: best", "test: accuracy"):  # both ranks report the same model
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith(head)]
        assert len(lines) == 2 and lines[0] == lines[1], lines
    res = json.loads((tmp_path / "t" / "result.json").read_text())
    assert res["epochs_run"] == 1
    assert load_checkpoint(tmp_path / "t" / "best.pt").kind == "teacher"
