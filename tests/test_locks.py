"""One writer per output folder: a second import/run/train on the same folder is refused at once,
naming the holder's pid; the lock of a killed process is taken over."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from volkd import locks
from volkd.cli import app
from volkd.errors import LockedError
from volkd.locks import lock_holder, lock_path, output_lock
from tests.conftest import make_cohort, tiny_study_config

HOLDER = textwrap.dedent("""
    import sys, time
    from volkd.locks import output_lock
    with output_lock(sys.argv[1], "volkd run study.yaml"):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path/out``."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield out, p
    if p.poll() is None:
        p.kill()
        p.wait()


def test_second_writer_is_refused_at_once_naming_the_holder(holder):
    out, p = holder
    with pytest.raises(LockedError, match=rf"another volkd process is writing this folder: pid {p.pid} on .*volkd run study.yaml"):
        with output_lock(out):
            pass
    assert lock_holder(out)["pid"] == p.pid


def test_a_killed_holders_lock_is_taken_over(holder):
    out, p = holder
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert lock_holder(out)["pid"] == p.pid  # the stale record is still there
    with output_lock(out) as lock:
        assert lock_holder(out)["pid"] == os.getpid() and lock.fd is not None
    assert not lock_path(out).exists()  # released: the lock file is removed


def test_the_same_process_cannot_take_a_folder_twice(tmp_path):
    with output_lock(tmp_path / "out"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path / "out"):
                pass
        with output_lock(tmp_path / "other"):  # another folder: independent
            pass
    with output_lock(tmp_path / "out"):  # released after the block
        pass


def test_import_is_refused_while_the_folder_is_locked(tmp_path):
    from volkd.data.importer import import_scans

    src = tmp_path / "a.npz"
    np.savez(src, images=np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype(np.float32), labels=np.arange(4) % 2)
    with output_lock(tmp_path / "c"):
        with pytest.raises(LockedError):
            import_scans(src, tmp_path / "c", target_grid=8)
    assert not (tmp_path / "c").exists()
    assert len(import_scans(src, tmp_path / "c", target_grid=8).cohort) == 4


def test_study_is_refused_while_its_folder_is_locked_and_nothing_is_touched(tmp_path):
    from volkd.study import run_study

    make_cohort(n_subjects=16, visits=1, grid=8).save(tmp_path / "c")
    cfg = tiny_study_config(dataset={"kind": "cohort", "path": str(tmp_path / "c")}, baselines=["majority"])
    with output_lock(tmp_path / "study"):
        with pytest.raises(LockedError):
            run_study(cfg, tmp_path / "study", progress=False)
    assert not (tmp_path / "study").exists()


def test_train_cli_is_refused_while_locked_and_only_rank_0_locks(tmp_path, monkeypatch):
    from volkd.cli.train_cmds import _locked

    make_cohort(n_subjects=6, visits=1, grid=8).save(tmp_path / "c")
    with output_lock(tmp_path / "run"):
        for cmd in (["train-teacher"], ["train-student", "--kd", "none"]):
            r = CliRunner().invoke(app, [*cmd, str(tmp_path / "c"), "--out", str(tmp_path / "run"), "--epochs", "1"])
            assert isinstance(r.exception, LockedError), r.output
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "1")  # torchrun's other ranks write into the folder rank 0 holds
    with output_lock(tmp_path / "run"), _locked(tmp_path / "run"):
        pass


def test_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    with pytest.warns(UserWarning, match="does not support locks"):
        with output_lock(tmp_path / "out"):
            pass


def test_lock_record(tmp_path):
    with output_lock(tmp_path / "out", "volkd import x --out out"):
        rec = json.loads(lock_path(tmp_path / "out").read_text())
        assert rec["pid"] == os.getpid() and rec["command"] == "volkd import x --out out" and rec["host"] and rec["since_utc"]
    assert lock_path(tmp_path / "out") == tmp_path / ".out.lock"
