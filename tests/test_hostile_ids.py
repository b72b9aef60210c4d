"""Every writer, fed a cohort whose scan and subject IDs are hostile (``../``, ``/``, absolute paths,
reserved names, 300 characters), writes inside its output and nowhere else; the IDs stay verbatim
in the tables (scans.csv, predictions, explain.csv) that map them to the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from volkd.cli import app
from volkd.data.cohort import Cohort
from volkd.paths import is_plain_name, safe_name
from tests.test_predict import tiny_mni_cohort, train_pair


def hostile_ids(n: int, root: Path, tag: str) -> list[str]:
    """``n`` distinct IDs that would escape, crash or clash if used as file names."""
    fixed = ["..", ".", "CON", "-rf", ".hidden", "x" * 300, "Müller ü", "a\\b", "C:\\evil", "con.txt", "A", "a"]
    out = [f"{f}" if tag == "scan" else f"{f}{tag}" for f in fixed]
    templates = ["../../{t}escape{k}", "../../../../../{t}deep{k}", "{t}sub/dir/x{k}", str(root) + "/abs/{t}evil{k}",
                 "{t}a/../../b{k}", "/{t}{k}"]
    k = 0
    while len(out) < n:
        out.append(templates[k % len(templates)].format(t=tag, k=k))
        k += 1
    return out[:n]


def snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def writes_only_inside(root: Path, outs: list[Path], fn) -> set[Path]:
    """Run ``fn``; assert every path it created lies in one of ``outs`` (and that it wrote something)."""
    before = snapshot(root)
    fn()
    new = snapshot(root) - before
    outside = sorted(str(p) for p in new if not any(p == o or o in p.parents for o in outs))
    assert not outside, f"written outside {outs}: {outside[:5]}"
    assert new, "the writer wrote nothing"
    return new


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    work = root / "s" / "a" / "b" / "c"
    work.mkdir(parents=True)
    c = tiny_mni_cohort()
    scan_ids = hostile_ids(len(c), root, "scan")
    subjects = sorted(set(c.subjects))
    subj_ids = dict(zip(subjects, hostile_ids(len(subjects), root, "S")))
    scans = c.scans.copy()
    scans["scan_id"] = scan_ids
    scans["subject_id"] = [subj_ids[s] for s in c.subjects]
    cohort = Cohort(np.asarray(c.volumes), scans, c.meta)
    writes_only_inside(root, [work / "cohort"], lambda: cohort.save(work / "cohort"))
    cohort = Cohort.load(work / "cohort")
    assert list(cohort.scan_ids) == scan_ids  # verbatim in scans.csv
    runs = work / "runs"
    new = writes_only_inside(root, [runs], lambda: train_pair(cohort, runs, projection="mip"))
    assert new
    return {"root": root, "work": work, "cohort": cohort, "teacher": runs / "teacher" / "best.pt",
            "student": runs / "student" / "best.pt", "scan_ids": scan_ids}


def test_import_keeps_hostile_ids_verbatim_and_writes_only_the_cohort(hostile):
    from volkd.data.importer import import_scans

    root, work, c = hostile["root"], hostile["work"], hostile["cohort"]
    src = root / "in" / "hostile.npz"
    src.parent.mkdir(exist_ok=True)
    np.savez(src, images=np.asarray(c.volumes), labels=c.y, scan_ids=np.array(hostile["scan_ids"]))
    out = work / "imported"
    writes_only_inside(root, [out], lambda: import_scans(src, out, target_grid=16))
    assert list(Cohort.load(out, verify=True).scan_ids) == hostile["scan_ids"]


def test_split_and_project_cli(hostile):
    root, work = hostile["root"], hostile["work"]
    cohort_dir = str(work / "cohort")
    for args, out in ((["split", cohort_dir, "--out", str(work / "splits.json"), "--repeats", "2"], work / "splits.json"),
                      (["project", cohort_dir, "--out", str(work / "proj"), "--method", "fuseme"], work / "proj"),
                      (["project", cohort_dir, "--out", str(work / "gallery"), "--method", "all"], work / "gallery")):
        def run():
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, r.output
        writes_only_inside(root, [out], run)
    assert (work / "proj" / "gallery.png").is_file() and (work / "gallery" / "gallery.png").is_file()
    assert list(pd.read_csv(work / "proj" / "scans.csv", dtype=str)["scan_id"]) == hostile["scan_ids"]


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_synth_export_names_folders_safely(hostile, fmt):
    from volkd.data.synth_export import write_synthetic

    root, work, c = hostile["root"], hostile["work"], hostile["cohort"]
    out = work / f"synth_{fmt}"
    new = writes_only_inside(root, [out], lambda: write_synthetic(c.subset(np.arange(6)), out, fmt=fmt, preview=False))
    for p in new:
        if p.is_relative_to(out / "ppmi" / "PPMI"):
            assert all(is_plain_name(part) or part.endswith((".nii.gz", ".dcm")) for part in p.relative_to(out).parts)
    table = pd.read_csv(out / "ppmi" / "collection.csv", dtype=str)
    assert list(table["Image Data ID"]) == hostile["scan_ids"][:6]  # the IDs themselves, verbatim
    assert (out / "ppmi" / "PPMI" / safe_name(str(c.subjects[0]))).is_dir()


def test_predict_writes_only_its_csv(hostile):
    from volkd.inference.predict import predict_to_csv

    root, work = hostile["root"], hostile["work"]
    out = work / "pred.csv"
    writes_only_inside(root, [out, work / "pred.skipped.csv"], lambda: predict_to_csv(hostile["student"], [work / "cohort"], out))
    df = pd.read_csv(out, dtype={"scan_id": str, "subject_id": str})
    assert sorted(df["scan_id"]) == sorted(hostile["scan_ids"])


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_explain_names_every_map_safely_and_maps_ids_to_files(hostile, which):
    from volkd.inference.explain import explain_scans

    root, work = hostile["root"], hostile["work"]
    out = work / f"ex_{which}"
    new = writes_only_inside(root, [out], lambda: explain_scans(hostile[which], [work / "cohort"], out))
    files = {p.name for p in new if p.parent == out}
    index = pd.read_csv(out / "explain.csv", dtype={"scan_id": str})
    assert sorted(index["scan_id"]) == sorted(hostile["scan_ids"])  # every scan, its ID verbatim
    listed = {f for fs in index["files"] for f in fs.split(";")}
    assert listed <= files and len(listed) == 2 * len(index)  # distinct files per scan (A and a too)
    for f in listed:
        assert is_plain_name(f.split("_gradcam")[0])


def test_export_writes_only_its_folder(hostile):
    from volkd.inference.export import export_model

    root, work = hostile["root"], hostile["work"]
    writes_only_inside(root, [work / "export"], lambda: export_model(hostile["student"], work / "export", format="torchscript"))


@pytest.mark.slow
def test_study_on_hostile_ids_and_a_hostile_study_name(hostile, monkeypatch):
    from tests.conftest import tiny_study_config
    from volkd.study import run_study

    root, work = hostile["root"], hostile["work"]
    cfg = tiny_study_config(name="../../../../evil/study", dataset={"kind": "cohort", "path": str(work / "cohort")})
    monkeypatch.chdir(work)
    out = work / "volkd-runs" / safe_name(cfg.name)
    res = None

    def run():
        nonlocal res
        res = run_study(cfg, progress=False)  # default folder: volkd-runs/<name made safe>
    writes_only_inside(root, [work / "volkd-runs"], run)
    assert res.root == Path("volkd-runs") / safe_name(cfg.name) and out.is_dir()
    assert res.n_failed == 0 and (out / "report.html").is_file() and list((out / "figures").glob("gallery-*.png"))
    preds = pd.concat([pd.read_csv(p, dtype={"scan_id": str}) for p in (out / "trials").glob("*.predictions.csv")])
    assert set(preds["scan_id"]) <= set(hostile["scan_ids"])
