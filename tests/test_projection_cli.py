"""`volkd project`: projected dataset on disk, gallery, overwrite protection, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from volkd.cli import app, main
from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import ConfigError, OutputExistsError
from volkd.projection import preset, project
from volkd.projection.dataset import load_projection, write_projection
from volkd.projection.gallery import gallery_rows, pick_scans, render_gallery

GRID = (20, 22, 18)


@pytest.fixture
def cohort_dir(tmp_path):
    rng = np.random.default_rng(0)
    vols = rng.gamma(2.0, 0.2, size=(8,) + GRID).astype(np.float32)
    vols[:, 8:11, 12:15, 9:12] += 4.0  # a bright "striatum" centred at (9, 13, 10)
    scans = pd.DataFrame({"scan_id": [f"s{i}" for i in range(8)], "subject_id": [f"p{i // 2}" for i in range(8)],
                          "visit": [i % 2 for i in range(8)], "label": ["PD" if (i // 2) % 2 else "control" for i in range(8)]})
    cohort = Cohort(vols, scans, CohortMeta(grid_shape=GRID, class_names=["control", "PD"], modality="spect"))
    return cohort.save(tmp_path / "cohort")


def test_cli_writes_fuseme_dataset_and_gallery(cohort_dir, tmp_path) -> None:
    out = tmp_path / "proj"
    res = CliRunner().invoke(app, ["project", str(cohort_dir), "--out", str(out), "--method", "fuseme", "--size", "16,16",
                                   "--ref-mode", "midline"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["gallery.png", "images.npy", "projection.json", "scans.csv", "spec.json"]
    ds = load_projection(out)
    assert ds.images.shape == (8, 3, 3, 16, 16)
    assert ds.spec.name == "fuseme-midline" and ds.spec.ref_source == "mean_image"
    assert ds.spec.ref_index == {"sagittal": 9, "coronal": 13, "axial": 10}
    cohort = Cohort.load(cohort_dir)
    np.testing.assert_array_equal(np.asarray(ds.images), project(cohort.volumes, ds.spec))
    assert ds.scans["scan_id"].tolist() == cohort.scan_ids.tolist()
    info = json.loads((out / "projection.json").read_text())
    assert info["cohort_fingerprint"] == cohort.meta.fingerprint and info["shape"] == [8, 3, 3, 16, 16]
    assert info["in_channels"] == 3 and info["n_views"] == 3 and "versions" in info["provenance"]
    assert (out / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".proj.tmp-*"))  # atomic: no temp directory left behind
    # the default FuseMe has one sagittal view per hemisphere (non-MNI: from the mean image's bright voxels)
    res = CliRunner().invoke(app, ["project", str(cohort_dir), "--out", str(tmp_path / "hemi"), "--method", "fuseme", "--size", "16,16"])
    assert res.exit_code == 0, res.output
    hemi = load_projection(tmp_path / "hemi")
    assert hemi.images.shape == (8, 4, 3, 16, 16) and hemi.spec.name == "fuseme" and hemi.spec.ref_mode == "hemispheres"
    assert hemi.spec.ref_index["sagittal_L"] < hemi.spec.ref_index["sagittal_R"]
    res = CliRunner().invoke(app, ["project", str(cohort_dir), "--out", str(tmp_path / "dyn"), "--method", "dynamic", "--per-class", "0"])
    assert res.exit_code == 0, res.output
    dyn = load_projection(tmp_path / "dyn").spec
    assert dyn.slab == "striatum" and dyn.axis_range == {"axial": (7, 14)}  # the bright region's z 9…11 ± 2


def test_cli_options_views_epsilon_ref_and_force(cohort_dir, tmp_path) -> None:
    out = tmp_path / "p"
    args = ["project", str(cohort_dir), "--out", str(out), "--method", "slices", "--views", "axial,coronal",
            "--fusion", "early", "--epsilon", "2", "--ref", "axial=8,coronal=11", "--per-class", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ds = load_projection(out)
    assert ds.images.shape == (8, 10, 22, 20)  # 2 views × 5 channels; axial 22×20, coronal 18×20 → 22×20
    assert ds.spec.ref_index["axial"] == 8 and ds.spec.ref_index["coronal"] == 11 and ds.spec.ref_source == "explicit"
    assert not (out / "gallery.png").exists()
    with pytest.raises(OutputExistsError, match="already exists.*--force"):
        CliRunner().invoke(app, args, catch_exceptions=False)
    res = CliRunner().invoke(app, args + ["--force", "--size", "12"])
    assert res.exit_code == 0, res.output
    assert load_projection(out).images.shape == (8, 10, 12, 12)


def test_cli_method_all_writes_gallery_only(cohort_dir, tmp_path) -> None:
    out = tmp_path / "all"
    res = CliRunner().invoke(app, ["project", str(cohort_dir), "--out", str(out), "--method", "all", "--views", "axial,sagittal"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["gallery.png", "projection.json", "specs.json"]
    specs = json.loads((out / "specs.json").read_text())
    assert [s["method"] for s in specs] == ["slice", "slices", "mip", "mean", "std", "entropy", "dynamic"]
    assert all(s["views"] == ["axial", "sagittal"] and s["fusion"] == "early" and s["ref_mode"] == "hemispheres" for s in specs)


def test_cli_errors_are_one_line_exit_2(cohort_dir, tmp_path, monkeypatch, capsys) -> None:
    for bad, msg in [(["--method", "median"], "unknown projection preset 'median'"),
                     (["--method", "slice", "--views", "axial,coronal"], "fusion='none' takes exactly one view"),
                     (["--method", "slices", "--epsilon", "15"], "ε=15 needs 31 slices"),
                     (["--ref", "axial:3"], "--ref: expected VIEW=INDEX"),
                     (["--slab", "brain"], "--slab must be 'striatum' or 'none'"),
                     (["--method", "slices", "--slab", "striatum"], "slab: 'slices' reads the reference slices"),
                     (["--method", "slices", "--ref-mode", "hemispheres"], "'hemispheres' splits the sagittal view")]:
        monkeypatch.setattr(sys, "argv", ["volkd", "project", str(cohort_dir), "--out", str(tmp_path / "x"), *bad])
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_gallery_rows_and_scan_choice(cohort_dir) -> None:
    cohort = Cohort.load(cohort_dir)
    idx = pick_scans(cohort, 1)
    assert idx.tolist() == [0, 2]  # first control, first PD
    spec = preset("early", method="slices", ref_index={"axial": 9, "coronal": 12, "sagittal": 9})
    images = project(np.asarray(cohort.volumes[idx]), spec)
    rows = gallery_rows(images, spec)
    assert [r[0] for r in rows] == ["early-slices\nc−1", "early-slices\nc", "early-slices\nc+1"]
    assert rows[0][1].shape == (2, 3) + images.shape[-2:]
    np.testing.assert_array_equal(rows[2][1][:, 1], images[:, 5])  # coronal view, channel c+1
    png = render_gallery(cohort, [spec, preset("early", method="mip")], n_per_class=1)
    assert png[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="all specs must share their views"):
        render_gallery(cohort, [spec, preset("mip")])


def test_write_projection_refuses_overwrite(cohort_dir, tmp_path) -> None:
    cohort = Cohort.load(cohort_dir)
    write_projection(cohort, preset("mip"), tmp_path / "m", gallery_per_class=None)
    with pytest.raises(OutputExistsError):
        write_projection(cohort, preset("mip"), tmp_path / "m")
    with pytest.raises(ConfigError, match="missing; not a projected dataset"):
        load_projection(tmp_path)
