"""``--force`` never deletes what volkd did not make: it replaces only a volkd output of the same kind,
never an input, a folder holding one, or a folder of other files; temp leftovers of killed processes
are cleaned on the next write into that folder."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from volkd.atomic import atomic_dir, check_output, clean_stale, clean_stale_inside, temp_prefix
from volkd.cli import app
from volkd.data.importer import import_scans
from volkd.errors import OutputError, OutputExistsError
from tests.conftest import make_cohort


def npz(path, n=6, grid=8, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=rng.normal(size=(n, grid, grid, grid)).astype(np.float32), labels=np.arange(n) % 2)
    return path


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_import_force_never_replaces_its_source_or_a_folder_holding_it(tmp_path):
    src = tmp_path / "src"
    npz(src / "a.npz")
    before = tree(tmp_path)
    with pytest.raises(OutputError, match="is this command's input"):
        import_scans(src, src, force=True, target_grid=8)
    with pytest.raises(OutputError, match="holds this command's input"):
        import_scans(src / "a.npz", src, force=True, target_grid=8)
    with pytest.raises(OutputError, match="holds this command's input"):
        import_scans(src / "a.npz", tmp_path, force=True, target_grid=8)  # an ancestor
    assert tree(tmp_path) == before  # the source scans are all there


def test_import_force_never_replaces_a_folder_of_other_files(tmp_path):
    src = npz(tmp_path / "in" / "a.npz")
    user = tmp_path / "thesis"
    (user / "chapters").mkdir(parents=True)
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not a volkd cohort folder.*thesis.tex"):
        import_scans(src, user, force=True, target_grid=8)
    assert (user / "thesis.tex").read_text() == "precious" and (user / "chapters").is_dir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a volkd cohort folder"):
        import_scans(src, tmp_path / "afile", force=True, target_grid=8)
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text("{}")
    with pytest.raises(OutputError, match="not a volkd cohort folder"):  # another kind of volkd output
        import_scans(src, study, force=True, target_grid=8)


def test_import_force_replaces_a_cohort_and_an_empty_folder(tmp_path):
    src = npz(tmp_path / "in" / "a.npz")
    out = tmp_path / "c"
    import_scans(src, out, target_grid=8)
    with pytest.raises(OutputExistsError, match="--force"):
        import_scans(src, out, target_grid=8)
    res = import_scans(npz(tmp_path / "in2" / "b.npz", n=8, seed=1), out, force=True, target_grid=8)
    assert len(res.cohort) == 8
    (tmp_path / "empty").mkdir()
    assert len(import_scans(src, tmp_path / "empty", force=True, target_grid=8).cohort) == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp, no lock left


def test_cli_import_force_over_source_exits_2_and_keeps_the_scans(tmp_path):
    src = tmp_path / "src"
    npz(src / "a.npz")
    r = CliRunner().invoke(app, ["import", str(src), "--out", str(src), "--force", "--grid", "8"])
    assert r.exit_code != 0 and isinstance(r.exception, OutputError)
    assert (src / "a.npz").is_file()


def test_every_folder_writer_refuses_a_foreign_folder_even_with_force(tmp_path):
    from volkd.data.synth_export import write_synthetic
    from volkd.projection import preset
    from volkd.projection.dataset import write_projection

    c = make_cohort(n_subjects=6, visits=1, grid=8)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a volkd cohort folder"):
        c.save(foreign, force=True)
    with pytest.raises(OutputError, match="not a volkd cohort folder"):
        write_synthetic(c, foreign, force=True, preview=False)
    with pytest.raises(OutputError, match="not a volkd projection folder"):
        write_projection(c, preset("mip"), foreign, force=True, gallery_per_class=None)
    assert tree(foreign) == ["notes.txt"]
    # a volkd output of the same kind is replaced
    c.save(tmp_path / "c")
    c.save(tmp_path / "c", force=True)
    write_projection(c, preset("mip"), tmp_path / "p", gallery_per_class=None)
    write_projection(c, preset("mean"), tmp_path / "p", force=True, gallery_per_class=None)
    make_cohort(n_subjects=6, visits=1, grid=8).save(tmp_path / "other")
    with pytest.raises(OutputError, match="not a volkd projection folder"):  # a cohort is not a projection
        write_projection(c, preset("mip"), tmp_path / "other", force=True, gallery_per_class=None)


def test_project_never_writes_over_its_cohort(tmp_path):
    from volkd.projection import preset
    from volkd.projection.dataset import write_projection

    c = make_cohort(n_subjects=6, visits=1, grid=8)
    c.save(tmp_path / "c")
    c = c.load(tmp_path / "c")
    with pytest.raises(OutputError, match="is this command's input"):
        write_projection(c, preset("mip"), tmp_path / "c", force=True, gallery_per_class=None)
    with pytest.raises(OutputError, match="holds this command's input"):
        write_projection(c, preset("mip"), tmp_path, force=True, gallery_per_class=None)


def test_file_outputs_never_replace_an_input_file_or_a_folder(tmp_path):
    c = make_cohort(n_subjects=15, visits=1, grid=8)
    c.save(tmp_path / "c")
    scans = (tmp_path / "c" / "scans.csv").read_bytes()
    r = CliRunner().invoke(app, ["split", str(tmp_path / "c"), "--out", str(tmp_path / "c" / "scans.csv"), "--force"])
    assert isinstance(r.exception, OutputError) and "is a file of this command's input" in str(r.exception)
    assert (tmp_path / "c" / "scans.csv").read_bytes() == scans
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path / "c", force=True)  # a file output never replaces a folder
    ok = tmp_path / "c" / "splits.json"  # a new file inside an input folder is fine
    r = CliRunner().invoke(app, ["split", str(tmp_path / "c"), "--out", str(ok), "--repeats", "2"])
    assert r.exit_code == 0 and ok.is_file()


def test_predict_never_writes_over_an_input(tmp_path, monkeypatch):
    from volkd.inference import predict as pred

    monkeypatch.setattr(pred, "predict_scans", lambda *a, **k: pytest.fail("computed before checking the output"))
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not read")
    with pytest.raises(OutputError, match="is this command's input"):
        pred.predict_to_csv(tmp_path / "ck.pt", [scan], scan, force=True)
    with pytest.raises(OutputError, match="is this command's input"):
        pred.predict_to_csv(tmp_path / "ck.pt", [scan], tmp_path / "ck.pt", force=True)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        pred.predict_to_csv(tmp_path / "ck.pt", [scan], tmp_path / "out", force=True)
    assert scan.read_bytes() == b"not read"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_processes_are_cleaned_live_ones_kept(tmp_path):
    out = tmp_path / "c"
    dead, live = _dead_pid(), os.getpid()
    stale = [tmp_path / f".c.import-{dead}-abc", tmp_path / f".c.tmp-{dead}-xyz"]
    for p in stale:
        p.mkdir()
        (p / "volumes.npy").write_bytes(b"0" * 100)
    (tmp_path / f".c.tmp-{dead}-file").write_text("x")
    keep = [tmp_path / f".c.tmp-{live}-busy", tmp_path / ".c.import-legacyname", tmp_path / f".other.tmp-{dead}-x"]
    for p in keep:
        p.mkdir()
    removed = clean_stale(out)
    assert sorted(removed) == sorted(stale + [tmp_path / f".c.tmp-{dead}-file"])
    assert all(p.exists() for p in keep)
    assert tmp_path / ".c.import-legacyname" in clean_stale(out, held=True)  # under the lock: whatever the pid
    assert (tmp_path / f".other.tmp-{dead}-x").exists()  # another output's temp is not ours to touch


def test_an_interrupted_replace_is_undone(tmp_path):
    """Killed between the two renames of atomic_dir: the old output is put back."""
    old = tmp_path / f".c.old-{_dead_pid()}"
    old.mkdir()
    (old / "cohort.json").write_text("{}")
    clean_stale(tmp_path / "c")
    assert (tmp_path / "c" / "cohort.json").is_file() and not old.exists()


def test_killed_import_leftover_is_removed_by_the_next_import(tmp_path):
    src = npz(tmp_path / "in" / "a.npz")
    leftover = tmp_path / f".c.import-{_dead_pid()}-q1w2e3"
    leftover.mkdir()
    (leftover / "volumes.npy").write_bytes(b"0" * 1000)
    import_scans(src, tmp_path / "c", target_grid=8)
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "in"]


def test_temp_names_carry_the_pid_and_atomic_dir_cleans_before_writing(tmp_path):
    assert temp_prefix(tmp_path / "x", "import") == f".x.import-{os.getpid()}-"
    stale = tmp_path / f".out.tmp-{_dead_pid()}-zz"
    stale.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.tmp-{os.getpid()}-")
        (tmp / "f").write_text("x")
    assert not stale.exists() and (tmp_path / "out" / "f").is_file()


def test_clean_stale_inside_removes_temps_anywhere_below(tmp_path):
    (tmp_path / "trials").mkdir()
    junk = [tmp_path / "trials" / ".r00-sbr.json.tmp-1-x", tmp_path / ".report.md.tmp-99999999-y"]
    for p in junk:
        p.write_text("half")
    (tmp_path / "trials" / "r00-sbr.json").write_text("{}")
    assert sorted(clean_stale_inside(tmp_path)) == sorted(junk)
    assert tree(tmp_path) == ["trials", "trials/r00-sbr.json"]
