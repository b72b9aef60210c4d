"""volkd explain: MONAI Grad-CAM maps for students (per view) and teachers (NIfTI on the input's own grid)."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from volkd.data.atlas import mni_grid_affine
from volkd.data.resample import resample_to_grid
from volkd.errors import ConfigError, OutputExistsError
from volkd.inference.explain import explain_scans, last_conv_layers
from volkd.train import load_checkpoint
from tests.test_predict import flipped_x, tiny_mni_cohort, train_pair, write_nifti


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    cohort = tiny_mni_cohort()
    teacher, student = train_pair(cohort, root / "runs")
    ck = load_checkpoint(student)
    i = list(cohort.scan_ids).index(ck.split["test"][0])
    # the input lives on ANOTHER grid than the model's: 20×22×18 voxels over the MNI box, stored left-right flipped
    shape = (20, 22, 18)
    data = resample_to_grid(np.asarray(cohort.volumes[i]), np.asarray(cohort.meta.affine), shape, mni_grid_affine(shape))
    scan = write_nifti(root / "subject_x.nii.gz", *flipped_x(data, mni_grid_affine(shape)))
    return {"root": root, "cohort": cohort, "teacher": teacher, "student": student, "scan": scan}


def test_teacher_map_is_a_nifti_on_the_input_grid(setup, tmp_path):
    out = tmp_path / "ex"
    results, skipped = explain_scans(setup["teacher"], [setup["scan"]], out)
    assert skipped == [] and len(results) == 1
    r = results[0]
    assert r.maps["volume"].shape == (16, 16, 16)  # the model grid
    assert r.files == ["subject_x_gradcam.nii.gz", "subject_x_gradcam.png"]
    src = nib.load(setup["scan"])
    cam = nib.load(out / "subject_x_gradcam.nii.gz")
    assert cam.shape == src.shape == (20, 22, 18)
    np.testing.assert_allclose(cam.affine, src.affine, atol=1e-5)
    assert cam.affine[0, 0] < 0  # kept the input's (flipped) orientation, not RAS
    m = np.asarray(cam.dataobj)
    assert np.isfinite(m).all() and m.std() > 1e-3 and m.min() >= 0 and m.max() <= 1 + 1e-6
    # resampled back correctly: the map read in world coordinates matches the model-grid map
    back = resample_to_grid(m, cam.affine, (16, 16, 16), np.asarray(setup["cohort"].meta.affine), antialias=False)
    inner = (slice(3, 13),) * 3
    assert np.corrcoef(back[inner].ravel(), r.maps["volume"][inner].ravel())[0, 1] > 0.9
    png = __import__("matplotlib.image", fromlist=["imread"]).imread(out / "subject_x_gradcam.png")
    assert png.ndim == 3 and png.shape[1] > png.shape[0]  # three panels side by side
    index = pd.read_csv(out / "explain.csv")
    assert list(index["scan_id"]) == ["subject_x"]
    assert index.loc[0, "explained_class"] == ["control", "PD"][int(np.argmax(r.proba))]


def test_student_maps_per_view_have_the_projected_shape(setup, tmp_path):
    out = tmp_path / "ex"
    ck = load_checkpoint(setup["student"])
    spec = ck.build_projection()
    results, _ = explain_scans(ck, [setup["scan"]], out, class_name="PD")
    r = results[0]
    assert r.class_name == "PD"
    assert list(r.maps) == ["axial", "coronal", "sagittal_L", "sagittal_R"] == spec.slots  # FuseMe: a sagittal view per hemisphere
    h, w = spec.output_shape((16, 16, 16))[-2:]
    for view, m in r.maps.items():
        assert m.shape == (h, w), view
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 + 1e-6
    assert any(m.std() > 1e-3 for m in r.maps.values())
    saved = np.load(out / "subject_x_gradcam.npz")
    assert sorted(saved.files) == ["axial", "coronal", "sagittal_L", "sagittal_R"]
    np.testing.assert_array_equal(saved["coronal"], r.maps["coronal"])
    assert (out / "subject_x_gradcam.png").stat().st_size > 1000
    assert not list(out.glob("*.nii.gz"))


def test_student_with_one_encoder_per_view(setup, tmp_path):
    _, student = train_pair(setup["cohort"], tmp_path / "runs", projection="joint", kd="none", shared_encoder=False)
    assert load_checkpoint(student).model_spec["shared_encoder"] is False
    results, _ = explain_scans(student, [setup["scan"]], tmp_path / "ex")
    maps = results[0].maps
    assert list(maps) == ["axial", "coronal", "sagittal_L", "sagittal_R"] and all(m.shape == (16, 16) for m in maps.values())
    assert all(np.isfinite(m).all() for m in maps.values())


def test_explain_refusals(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"--class 'tumour' is not a class of this model; choose one of \['control', 'PD'\]"):
        explain_scans(setup["student"], [setup["scan"]], tmp_path / "a", class_name="tumour")
    (tmp_path / "b").mkdir()
    with pytest.raises(OutputExistsError, match="pass --force"):
        explain_scans(setup["student"], [setup["scan"]], tmp_path / "b")
    explain_scans(setup["student"], [setup["scan"]], tmp_path / "b", force=True)
    assert (tmp_path / "b" / "explain.csv").is_file()


def test_last_conv_layer_found_from_the_model():
    from volkd.models import ModelSpec, build_model

    m = build_model(ModelSpec(arch="resnet18", spatial_dims=2, in_channels=1, n_views=3, shared_encoder=False, width=8)).eval()
    names = last_conv_layers(m, torch.zeros(1, 3, 1, 64, 64))  # layer4 maps are 2×2 at 64²
    assert names == [f"encoder.encoders.{v}.net.layer4.1.conv2" for v in range(3)]
    t = build_model(ModelSpec(arch="lightcnn", spatial_dims=3, in_channels=1, width=4)).eval()
    # 16³ with four stride-2 blocks ends at 1 voxel: the last conv with a spatial map is in block 3
    (name,) = last_conv_layers(t, torch.zeros(1, 1, 16, 16, 16))
    assert name.startswith("encoder.blocks.2.")
    (name32,) = last_conv_layers(t, torch.zeros(1, 1, 32, 32, 32))
    assert name32.startswith("encoder.blocks.3.")


def test_cli_explain(setup, tmp_path):
    from typer.testing import CliRunner

    import volkd.cli.use_cmds  # noqa: F401
    from volkd.cli.app import app

    r = CliRunner().invoke(app, ["explain", str(setup["teacher"]), str(setup["scan"]), "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "explained 1 scan(s)" in r.output
    assert (tmp_path / "e" / "subject_x_gradcam.nii.gz").is_file()
