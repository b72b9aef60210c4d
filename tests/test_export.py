"""volkd export: ONNX (onnxruntime) and TorchScript within 1e-4 of PyTorch, in-graph projections, model card, refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from volkd.errors import OutputExistsError
from volkd.inference.export import ExportError, export_model, prepare_inputs, random_volumes
from volkd.inference.torch_ops import TorchNormalizer, TorchProjection
from volkd.projection import preset, project
from volkd.train import load_checkpoint, predict_proba
from tests.test_predict import tiny_mni_cohort, train_pair


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cohort = tiny_mni_cohort()
    teacher, student = train_pair(cohort, root / "runs")
    _, entropy = train_pair(cohort, root / "entropy", projection="entropy", kd="none")
    return {"root": root, "cohort": cohort, "teacher": teacher, "student": student, "entropy": entropy}


@pytest.mark.slow
def test_onnx_student_with_projection_in_graph(setup, tmp_path):
    import onnxruntime as ort

    res = export_model(setup["student"], tmp_path / "onnx", format="onnx")
    assert res.preprocessing_in_graph and res.input_name == "volume" and res.input_shape == ["N", 16, 16, 16]
    assert res.max_abs_diff <= 1e-4 and res.model_file == tmp_path / "onnx" / "model.onnx"
    # independent check: onnxruntime on fresh raw volumes (batch 5) vs predict_proba
    ck = load_checkpoint(setup["student"])
    vols = random_volumes(ck, (16, 16, 16), 5, seed=7)
    got = ort.InferenceSession(str(res.model_file), providers=["CPUExecutionProvider"]).run(None, {"volume": vols})[0]
    assert got.shape == (5, 2)
    assert np.abs(got - predict_proba(ck, vols)).max() <= 1e-4
    real = np.asarray(setup["cohort"].volumes[:4])  # real scans as well as random ones
    got = ort.InferenceSession(str(res.model_file), providers=["CPUExecutionProvider"]).run(None, {"volume": real})[0]
    assert np.abs(got - predict_proba(ck, real)).max() <= 1e-4


@pytest.mark.slow
def test_onnx_dynamic_slab_student(setup, tmp_path):
    """The dynamic image over the striatal slab (the preset) runs inside the ONNX graph, within 1e-4."""
    _, dyn = train_pair(setup["cohort"], tmp_path / "dyn", projection="dynamic", kd="none")
    spec = load_checkpoint(dyn).projection_spec
    assert spec["slab"] == "striatum" and spec["axis_range"]["axial"][1] - spec["axis_range"]["axial"][0] < 16
    res = export_model(dyn, tmp_path / "onnx", format="onnx")
    assert res.preprocessing_in_graph and res.input_shape == ["N", 16, 16, 16] and res.max_abs_diff <= 1e-4


def test_torchscript_teacher_and_entropy_prestep(setup, tmp_path):
    res = export_model(setup["teacher"], tmp_path / "ts", format="torchscript")
    ck = load_checkpoint(setup["teacher"])
    loaded = torch.jit.load(str(res.model_file))
    vols = random_volumes(ck, (16, 16, 16), 3, seed=3)
    assert np.abs(loaded(torch.from_numpy(vols)).detach().numpy() - predict_proba(ck, vols)).max() <= 1e-4
    assert res.preprocessing_in_graph and res.input_shape == ["N", 16, 16, 16]
    # entropy: the exported graph takes projected images; the pre-step is documented and provided
    ent = export_model(setup["entropy"], tmp_path / "ent", format="torchscript")
    ck = load_checkpoint(setup["entropy"])
    assert not ent.preprocessing_in_graph and ent.input_name == "images" and ent.input_shape == ["N", 1, 16, 16]
    assert any("entropy projection is not in the graph" in n for n in ent.notes)
    vols = random_volumes(ck, (16, 16, 16), 2, seed=4)
    out = torch.jit.load(str(ent.model_file))(torch.from_numpy(prepare_inputs(ck, vols))).detach().numpy()
    assert np.abs(out - predict_proba(ck, vols)).max() <= 1e-4
    card = (tmp_path / "ent" / "model_card.md").read_text()
    assert "NOT in the graph: a pre-step" in card and "Input `images`: float32 of shape ['N', 1, 16, 16]" in card


def test_model_card_and_export_record(setup, tmp_path):
    import json

    export_model(setup["student"], tmp_path / "ts", format="torchscript")
    ck = load_checkpoint(setup["student"])
    card = (tmp_path / "ts" / "model_card.md").read_text()
    for text in (f"Cohort fingerprint: `{ck.cohort_fingerprint}`", "## Intended use", "## Limits", "## Metrics",
                 "| val_loss |", "Held-out test partition", "Input `volume`: float32 of shape ['N', 16, 16, 16]",
                 "Projection `fuseme`", "computed inside the exported graph", "Normalisation: `zscore`",
                 "0 = control, 1 = PD", "space MNI, placement `mni`", f"{len(ck.train_subjects)} training subjects",
                 "Not a medical device", "## Versions", "max |Δ| ="):
        assert text in card, text
    rec = json.loads((tmp_path / "ts" / "export.json").read_text())
    assert rec["format"] == "torchscript" and rec["max_abs_diff"] <= 1e-4 and rec["class_names"] == ["control", "PD"]
    assert rec["training_grid"]["grid_shape"] == [16, 16, 16] and len(rec["model_sha256"]) == 64


def test_refusals(setup, tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError, match="pass --force"):
        export_model(setup["student"], tmp_path / "taken", format="torchscript")
    assert list((tmp_path / "taken").iterdir()) == []
    with pytest.raises(Exception, match=r"--format 'tflite' unknown; choose one of \['onnx', 'torchscript'\]"):
        export_model(setup["student"], tmp_path / "x", format="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"onnxruntime is missing\): pip install volkd\[export\]"):
        export_model(setup["student"], tmp_path / "y", format="onnx")
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("grid", [(16, 16, 16), (12, 16, 14)])
def test_torch_projection_matches_numpy(grid):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *grid)).astype(np.float32)
    ref = {"axial": 6, "coronal": 7, "sagittal": 5, "sagittal_L": 3, "sagittal_R": 8}
    half = {"sagittal_L": (0, 6), "sagittal_R": (6, grid[0])}
    specs = [preset(m, ref_index=ref) for m in ("slice", "slices", "mip", "mean", "std")]
    specs += [preset("dynamic", axis_range={"axial": (3, 10)}), preset("dynamic", slab=None)]
    specs += [preset("fuseme", ref_index=ref), preset("early", ref_index=ref), preset("joint", method="dynamic", axis_range=half),
              preset("early", method="std", out_size=(20, 18)),
              preset("joint", method="mip", axis_range=half, mask_striatum=True, crop_box={"axial": (2, 9, 3, 10), "coronal": (1, 8, 2, 9), "sagittal": (0, 5, 1, 9)}),
              preset("joint", method="mip", axis_range=half, mask_striatum=True, mask_mode="zero", crop_box={"axial": (2, 9, 3, 10), "coronal": (1, 8, 2, 9), "sagittal": (0, 5, 1, 9)})]
    for spec in specs:
        want = project(x, spec)
        got = TorchProjection(spec, grid)(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape, spec.label
        assert np.abs(got - want).max() <= 1e-5, spec.label
    with pytest.raises(Exception, match="projection 'entropy' cannot run inside an exported graph"):
        TorchProjection(preset("entropy"), grid)


def test_torch_normalizers_match_numpy():
    from volkd.data.atlas import mni_grid_affine
    from volkd.data.normalize import get_normalizer

    rng = np.random.default_rng(1)
    grid = (16, 16, 16)
    vols = (np.abs(rng.normal(size=(6, *grid))) + 0.5).astype(np.float32)
    for name, kw in (("zscore", {}), ("global_zscore", {}), ("reference", {"affine": mni_grid_affine(grid)}), ("none", {})):
        norm = get_normalizer(name, **kw).fit(vols, np.arange(4))
        got = TorchNormalizer(norm.state_dict(), grid)(torch.from_numpy(vols[4:])).numpy()
        assert np.abs(got - norm.transform(vols[4:])).max() <= 1e-5, name


def test_cli_export(setup, tmp_path):
    from typer.testing import CliRunner

    import volkd.cli.use_cmds  # noqa: F401
    from volkd.cli.app import app

    r = CliRunner().invoke(app, ["export", str(setup["teacher"]), "--format", "torchscript", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "exported" in r.output and "model_card.md" in r.output
    r = CliRunner().invoke(app, ["export", str(setup["teacher"]), "--format", "torchscript", "--out", str(tmp_path / "m")])
    assert isinstance(r.exception, OutputExistsError)
