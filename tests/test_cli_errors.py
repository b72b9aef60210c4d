"""Errors, not tracebacks: every command turns OS errors (permission, read-only, disk full, missing,
a file in the way) into one line with exit code 2; predict checks it can write before computing.

The suite runs as root here, where chmod-based permission tests do not fail; an unwritable output
is made root-proof by putting it under a regular FILE (``afile/sub``), and permission / read-only
file systems / a full disk are simulated at the OS boundary."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from volkd import atomic
from volkd.atomic import probe_writable
from volkd.cli import main
from volkd.errors import OutputError, os_error_message
from tests.conftest import make_cohort


def run_main(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["volkd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in err, (n, err)


@pytest.mark.parametrize("e, says", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out"), "/data/out: permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/c"), "/mnt/ro/c: the file system is read-only"),
    (OSError(errno.ENOSPC, "No space left on device", "/big/volumes.npy"), "/big/volumes.npy: no space left on the device"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), "/x/y: no such file or folder"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "afile/sub"), "afile/sub: a path component is a file"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "/a → /b: invalid cross-device link"),
    (OSError("something odd"), "oserror"),
])
def test_os_error_message(e, says):
    msg = os_error_message(e)
    assert says in msg and "\n" not in msg


@pytest.mark.parametrize("e", [
    PermissionError(errno.EACCES, "Permission denied", "c/volumes.npy"),
    OSError(errno.EROFS, "Read-only file system", "c/volumes.npy"),
    OSError(errno.ENOSPC, "No space left on device", "c/volumes.npy"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "c/volumes.npy"),
])
def test_an_os_error_inside_a_command_is_one_line_exit_2(tmp_path, monkeypatch, capsys, e):
    from volkd.data import cohort as cohort_mod

    make_cohort(n_subjects=6, visits=1, grid=8).save(tmp_path / "c")

    def boom(*a, **k):
        raise e

    monkeypatch.setattr(cohort_mod.np, "load", boom)
    code, err = run_main(monkeypatch, capsys, "info", str(tmp_path / "c"))
    assert code == 2 and "Traceback" not in err and "unreadable .npy file" in err  # the cohort loader names the file


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    src = tmp_path / "a.npz"
    np.savez(src, images=np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype(np.float32), labels=np.arange(4) % 2)
    real = os.replace

    def full(a, b):
        if str(b).endswith("cohort.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(b))
        return real(a, b)

    monkeypatch.setattr(atomic.os, "replace", full)
    code, err = run_main(monkeypatch, capsys, "import", str(src), "--out", str(tmp_path / "c"), "--grid", "8")
    assert_one_line_error(code, err, "no space left on the device", "[ENOSPC]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no cohort, no temp, no lock


@pytest.fixture
def blocked(tmp_path):
    """A cohort, a study config on it, and a regular file standing where an output folder should go."""
    make_cohort(n_subjects=16, visits=1, grid=8).save(tmp_path / "c")
    (tmp_path / "study.yaml").write_text(f"name: s\ndataset: {{kind: cohort, path: {tmp_path / 'c'}}}\nbaselines: [majority]\n")
    (tmp_path / "afile").write_text("in the way")
    (tmp_path / "ck.pt").write_bytes(b"never read: the output is checked first")
    return tmp_path


COMMANDS = {
    "import": ["import", "{t}/c/volumes.npy", "--out", "{t}/afile/sub"],
    "run": ["run", "{t}/study.yaml", "--out", "{t}/afile/sub", "--no-progress"],
    "split": ["split", "{t}/c", "--out", "{t}/afile/splits.json"],
    "predict": ["predict", "{t}/ck.pt", "{t}/c", "--out", "{t}/afile/p.csv"],
    "explain": ["explain", "{t}/ck.pt", "{t}/c", "--out", "{t}/afile/ex"],
    "export": ["export", "{t}/ck.pt", "--format", "torchscript", "--out", "{t}/afile/x"],
    "train-teacher": ["train-teacher", "{t}/c", "--out", "{t}/afile/t", "--epochs", "1"],
    "train-student": ["train-student", "{t}/c", "--out", "{t}/afile/t", "--epochs", "1", "--kd", "none"],
    "synth": ["synth", "--out", "{t}/afile/s", "--n-subjects", "8", "--grid", "8"],
    "project": ["project", "{t}/c", "--out", "{t}/afile/p"],
    "init-config": ["init-config", "--out", "{t}/afile/study.yaml"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_with_an_unwritable_output_is_one_line_exit_2(blocked, monkeypatch, capsys, command):
    args = [a.format(t=blocked) for a in COMMANDS[command]]
    code, err = run_main(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "afile")
    assert (blocked / "afile").read_text() == "in the way"


def test_every_command_with_a_missing_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "missing")
    for args in (["info", missing], ["split", missing, "--out", str(tmp_path / "s.json")],
                 ["project", missing, "--out", str(tmp_path / "p")], ["run", missing + ".yaml"],
                 ["import", missing, "--out", str(tmp_path / "c")],
                 ["train-teacher", missing, "--out", str(tmp_path / "t")],
                 ["export", missing + ".pt", "--out", str(tmp_path / "x")]):
        code, err = run_main(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, "missing")


def test_usage_errors_keep_clicks_message_without_a_traceback(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "info", "somewhere", "--bogus")
    assert code == 2 and "No such option: --bogus" in err and "Traceback" not in err


def test_predict_checks_it_can_write_before_computing(blocked, monkeypatch):
    from volkd.inference import predict as pred

    monkeypatch.setattr(pred, "predict_scans", lambda *a, **k: pytest.fail("computed before checking the output"))
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        pred.predict_to_csv(blocked / "ck.pt", [blocked / "c"], blocked / "afile" / "p.csv")
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False)
    with pytest.raises(OutputError, match="permission denied"):
        pred.predict_to_csv(blocked / "ck.pt", [blocked / "c"], blocked / "new" / "p.csv")


def test_probe_writable_permission_and_read_only(tmp_path, monkeypatch):
    probe_writable(tmp_path / "a" / "b" / "c.csv")  # creatable: nothing raised, nothing created
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False)
    with pytest.raises(OutputError, match=f"permission denied to write in {tmp_path}"):
        probe_writable(tmp_path / "a" / "out")
    monkeypatch.undo()

    class RO:
        f_flag = getattr(os, "ST_RDONLY", 1)

    monkeypatch.setattr(atomic.os, "statvfs", lambda p: RO())
    with pytest.raises(OutputError, match="read-only file system"):
        probe_writable(tmp_path / "out")
