"""Configs fitted to a cohort (`volkd init-config --cohort`), the `baselines` key, and what is refused at config time."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import make_cohort
from volkd.cli import app
from volkd.data.splits import holdout_splits
from volkd.models import ModelSpec
from volkd.study import run_study
from volkd.train import TrainConfig, load_checkpoint, train_teacher
from volkd.errors import ConfigError, OutputExistsError
from volkd.experiment.cohort_config import fit_config, write_cohort_config
from volkd.experiment.config import load_config, load_profile, validate_config
from volkd.experiment.trials import method_order, plan_trials


def native_cohort(tmp_path, split: bool = False, n_subjects: int = 12):
    """A 16³ cohort in space 'unknown' (as arrays import); a third of the subjects are controls (imbalanced)."""
    c = make_cohort(n_subjects=n_subjects, visits=1, grid=16)
    if split:
        c.scans["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    c.save(tmp_path / "native")
    return tmp_path / "native"


@pytest.fixture(scope="module")
def mni_cohort(tmp_path_factory):
    from volkd.data.synth import synthesize

    path = tmp_path_factory.mktemp("mni") / "mni"
    synthesize(n_subjects=12, grid=(32, 32, 32), visits=1, seed=0).save(path)
    return path


def test_non_mni_imbalanced_cohort(tmp_path):
    fitted = fit_config(native_cohort(tmp_path))
    cfg = fitted.config
    assert cfg.dataset.kind == "cohort" and cfg.dataset.path == str(tmp_path / "native")
    assert cfg.training.extra["normalizer"] == "zscore" and cfg.baselines == ["majority"]
    assert cfg.split.protocol == "holdout"
    assert cfg.report.headline_metric == "balanced_accuracy"  # controls are 4 of 12 scans (33 % < 35 %)
    assert cfg.teacher.stem_stride == cfg.student.stem_stride == 1  # 16³ grid
    assert cfg.external == []
    # the quick profile's budget is kept
    quick = load_profile("quick")
    assert cfg.training.epochs == quick.training.epochs and cfg.projections == quick.projections
    assert cfg.training.extra["augment"] == quick.training.extra["augment"]
    text = fitted.yaml()
    assert "► normalizer zscore" in text and "not MNI" in text and "► no sbr" in text and "33% of the scans" in text
    assert validate_config(yaml.safe_load(text)) == cfg  # the comments never change the values


def test_mni_cohort_gets_reference_and_sbr(mni_cohort):
    fitted = fit_config(mni_cohort)
    cfg, facts = fitted.config, fitted.facts
    assert facts["occipital_voxels"] > 0 and facts["striatum_voxels"] > 0
    assert cfg.training.extra["normalizer"] == "reference" and cfg.baselines == ["sbr", "majority"]
    assert cfg.teacher.stem_stride == 1  # 32³ < 48
    frac = facts["minority_fraction"]
    assert cfg.report.headline_metric == ("balanced_accuracy" if frac < 0.35 else "f1_weighted")


def test_official_split_when_the_cohort_has_one(tmp_path):
    fitted = fit_config(native_cohort(tmp_path, split=True))
    assert fitted.config.split.protocol == "official" and fitted.config.split.repeats == 1
    assert fitted.facts["official_split"] == {"train": 6, "val": 3, "test": 3}
    assert any("TODO(split.seeds)" in line for line in fitted.reasons["split"])


def test_unusable_split_column_falls_back_to_holdout(tmp_path):
    c = make_cohort(n_subjects=12, visits=1, grid=16)
    c.scans["split"] = ["train"] * 12  # no test scans
    c.save(tmp_path / "c")
    fitted = fit_config(tmp_path / "c")
    assert fitted.config.split.protocol == "holdout" and "cannot be used" in fitted.reasons["split"][0]


def test_impossible_baseline_and_normaliser_are_refused_at_config_time(tmp_path):
    path = str(native_cohort(tmp_path))
    with pytest.raises(ConfigError, match=r"key 'baselines': the SBR baseline needs a cohort in MNI space .* space 'unknown'"):
        validate_config({"dataset": {"kind": "cohort", "path": path}, "baselines": ["sbr", "majority"]})
    with pytest.raises(ConfigError, match=r"key 'training.extra.normalizer': reference .* space 'unknown'; use normalizer: zscore"):
        validate_config({"dataset": {"kind": "cohort", "path": path}, "baselines": [],
                         "training": {"extra": {"normalizer": "reference"}}})
    validate_config({"dataset": {"kind": "cohort", "path": path}, "baselines": ["majority"]})
    validate_config({"dataset": {"kind": "synthetic"}, "baselines": ["sbr", "majority"],  # synthetic is MNI
                     "training": {"extra": {"normalizer": "reference"}}})
    validate_config({"dataset": {"kind": "cohort", "path": str(tmp_path / "not-yet")},  # unknown now: the loader says
                     "training": {"extra": {"normalizer": "reference"}}})


def test_fitted_baselines_in_the_plan():
    cfg = validate_config({"projections": ["mip"], "kd": [{"name": "none"}], "split": {"repeats": 2}, "baselines": ["majority"]})
    assert [t.trial_id for t in plan_trials(cfg)][:3] == ["r00-majority", "r00-teacher", "r00-student-mip-none"]
    assert method_order(cfg) == ["teacher", "majority", "mip+none"]


def test_reference_normaliser_gets_the_space_in_training(tmp_path):
    c = make_cohort(n_subjects=12, visits=1, grid=16)  # space 'unknown'
    split = holdout_splits(c, n_repeats=1)[0]
    with pytest.raises(ConfigError, match=r"space 'unknown', not MNI.*training\.extra\.normalizer: zscore"):
        train_teacher(c, split, ModelSpec(arch="lightcnn", spatial_dims=3, in_channels=1, num_classes=2, width=4),
                      TrainConfig(epochs=1, normalizer="reference", progress=False), tmp_path / "t")
    assert not (tmp_path / "t" / "best.pt").exists()


def test_cli_init_config_cohort(tmp_path):
    path = native_cohort(tmp_path)
    out = tmp_path / "study.yaml"
    res = CliRunner().invoke(app, ["init-config", "--cohort", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "training.extra: normalizer zscore" in res.output and f"volkd run {out}" in res.output
    cfg = load_config(out)
    assert cfg.name == "study" and cfg.baselines == ["majority"]
    res = CliRunner().invoke(app, ["init-config", "--cohort", str(path), "--out", str(out)])
    assert isinstance(res.exception, OutputExistsError)
    write_cohort_config(path, out, profile="paper", force=True)
    assert load_config(out).training.epochs == load_profile("paper").training.epochs
    res = CliRunner().invoke(app, ["init-config", "--cohort", str(tmp_path / "nope"), "--out", str(tmp_path / "x.yaml")])
    assert res.exit_code != 0 and "not a cohort directory" in str(res.exception)


@pytest.mark.slow
def test_fitted_config_runs_on_a_non_mni_cohort(tmp_path):
    """init-config --cohort on a non-MNI cohort → a study that runs: no SBR, zscore, a majority baseline row."""
    path = native_cohort(tmp_path, n_subjects=16)
    out = tmp_path / "study.yaml"
    res = CliRunner().invoke(app, ["init-config", "--cohort", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = yaml.safe_load(out.read_text())
    # shrink only the budget; every key the cohort decided stays as written
    data.update(projections=["mip"], kd=[{"name": "none"}, {"name": "graph"}])
    data["split"]["repeats"] = 1
    data["training"].update(epochs=1, patience=1, batch_size=8)
    data["teacher_training"].update(epochs=1, patience=1)
    data["teacher"]["width"] = data["student"]["width"] = 4
    data["report"].update(latency_runs=1, graph_batch=4, gallery_scans=1)
    cfg = validate_config(data)
    assert cfg.baselines == ["majority"] and cfg.training.extra["normalizer"] == "zscore"
    outcome = run_study(cfg, tmp_path / "run", progress=False)
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (results["status"] == "ok").all(), results[["trial_id", "error"]]
    assert set(results["kind"]) == {"majority", "teacher", "student"}  # no SBR trial at all
    maj = results[results["kind"] == "majority"].iloc[0]
    assert maj["roc_auc"] == pytest.approx(0.5) and maj["balanced_accuracy"] == pytest.approx(0.5)
    assert list(outcome.headline["method"]) == ["mip", "3D teacher", "majority class (constant)"]
    md = (tmp_path / "run" / "report.md").read_text()
    headline = md.split("## Headline")[1].split("\n## ")[0]
    assert "| majority class (constant) |" in headline and "SBR" not in headline
    assert load_checkpoint(tmp_path / "run" / "models" / "r00-teacher" / "best.pt").normalizer["name"] == "zscore"


def test_last_stage_size_matches_the_network():
    from volkd.experiment.cohort_config import last_stage_size
    from volkd.models import build_model

    assert [last_stage_size(g, 2) for g in (16, 28, 32, 33, 64)] == [1, 2, 2, 3, 4]
    assert last_stage_size(28, 1) == 4
    shapes = []
    for stride in (1, 2):
        m = build_model(ModelSpec(arch="lightcnn", spatial_dims=3, in_channels=1, num_classes=2, width=4, stem_stride=stride))
        feats = [o.shape[2] for o in _conv_outputs(m, (1, 1, 28, 28, 28))]
        shapes.append(feats[-1])
    assert shapes == [last_stage_size(28, 1), last_stage_size(28, 2)]


def _conv_outputs(model, shape):
    import torch

    outs = []
    hooks = [mod.register_forward_hook(lambda _m, _i, o: outs.append(o)) for mod in model.modules()
             if isinstance(mod, torch.nn.Conv3d)]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return outs
