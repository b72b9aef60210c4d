"""Study config: profiles, validation errors naming the key, annotated YAML, hashing, init-config."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

from volkd.errors import ConfigError, OutputExistsError
from volkd.experiment.config import (
    StudyConfig, annotated_yaml, load_config, load_profile, validate_config, write_config,
)


def test_quick_profile_meets_the_budget_shape() -> None:
    cfg = load_profile("quick")
    assert cfg.name == "quick"
    assert len(cfg.projections) >= 4 and "fuseme" in cfg.projections
    assert cfg.kd_names == ["none", "graph"]
    assert cfg.split.repeats >= 3
    assert cfg.dataset.kind == "synthetic" and cfg.dataset.grid == 32
    assert [e.modality for e in cfg.external] == ["pet"]


def test_paper_profile_is_the_studys_protocol() -> None:
    cfg = load_profile("paper")
    assert cfg.teacher.arch == "resnet18" and cfg.student.arch == "resnet18"
    assert cfg.dataset.grid == 64
    assert cfg.split.protocol == "holdout" and cfg.split.repeats == 20 and cfg.split.fractions == (0.6, 0.2, 0.2)
    assert cfg.training.batch_size == 64
    assert cfg.training.optimizer == "radam" and cfg.training.scheduler == "cosine_warm_restarts"
    graph = cfg.kd_config("graph")
    assert graph.temperature == 5.0 and graph.w_kd == 5.0
    assert cfg.projections == ["slice", "slices", "dynamic", "entropy", "early", "joint", "fuseme"]
    assert "none" in cfg.kd_names


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_packaged_yaml_is_the_annotated_writer_output(name: str) -> None:
    text = resources.files("volkd").joinpath("configs", f"{name}.yaml").read_text()
    cfg = load_profile(name)
    header = "\n".join(line[2:] for line in text.split("\n\n")[0].splitlines())
    assert annotated_yaml(cfg, header) == text
    # every top-level key is preceded by its comment
    assert "# 2D projection presets" in text and "# training budget" in text


def test_annotated_yaml_round_trips() -> None:
    cfg = load_profile("quick").model_copy(update={"name": "x"})
    again = validate_config(yaml.safe_load(annotated_yaml(cfg)))
    assert again == cfg


def test_unknown_key_is_named_with_allowed_keys() -> None:
    with pytest.raises(ConfigError) as e:
        validate_config({"training": {"epoch": 3}}, where="s.yaml")
    msg = str(e.value)
    assert "s.yaml" in msg and "training.epoch" in msg and "epochs" in msg and "patience" in msg


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'projection'.*projections"):
        validate_config({"projection": ["mip"]})


@pytest.mark.parametrize("data, key, allowed", [
    ({"projections": ["mipp"]}, "projections", "fuseme"),
    ({"split": {"protocol": "random"}}, "split.protocol", "holdout"),
    ({"kd": [{"name": "none"}, {"name": "distil"}]}, "kd.1.name", "graph"),
    ({"teacher": {"arch": "vgg"}}, "teacher.arch", "resnet18"),
    ({"report": {"headline_metric": "f2"}}, "report.headline_metric", "f1_weighted"),
    ({"training": {"optimizer": "sgd"}}, "training.optimizer", "radam"),
])
def test_bad_value_names_key_and_allowed_values(data: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    assert f"'{key}'" in str(e.value) and allowed in str(e.value)


def test_other_semantic_errors() -> None:
    with pytest.raises(ConfigError, match="split.*sum"):
        validate_config({"split": {"fractions": [0.5, 0.2, 0.2]}})
    with pytest.raises(ConfigError, match="no path"):
        validate_config({"dataset": {"kind": "cohort"}})
    with pytest.raises(ConfigError, match="official.*repeats: 1"):
        validate_config({"split": {"protocol": "official", "repeats": 3}})
    with pytest.raises(ConfigError, match="listed twice"):
        validate_config({"projections": ["mip", "mip"]})
    with pytest.raises(ConfigError, match=r"kd.1.params.*affinty"):
        validate_config({"kd": [{"name": "none"}, {"name": "graph", "params": {"affinty": "cosine"}}]})
    with pytest.raises(ConfigError, match=r"training.extra.*weight_decy"):
        validate_config({"training": {"extra": {"weight_decy": 0.1}}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_config([1, 2])


def test_load_config_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="init-config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    for text in ("", "# only a comment\n", "---\n", "null\n"):  # an empty config never silently runs the defaults
        empty.write_text(text)
        with pytest.raises(ConfigError, match="empty.yaml: the study config is empty"):
            load_config(empty)
    for text, kind in (("- a\n- b\n", "list"), ("quick\n", "str"), ("42\n", "int")):
        empty.write_text(text)
        with pytest.raises(ConfigError, match=f"expected a mapping of keys.*got {kind}"):
            load_config(empty)
    (tmp_path / "partial.yaml").write_text("name: partial\n")  # a mapping: missing keys take their defaults
    assert load_config(tmp_path / "partial.yaml") == StudyConfig(name="partial")
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*quick"):
        load_profile("fast")


def test_config_hash_tracks_results_not_name() -> None:
    a = load_profile("quick")
    assert a.config_hash() == a.model_copy(update={"name": "other"}).config_hash()
    b = validate_config({**a.model_dump(mode="json"), "training": {**a.training.model_dump(), "epochs": 99}})
    assert b.config_hash() != a.config_hash()


def test_train_dict_overrides_and_seeds() -> None:
    cfg = validate_config({"seed": 7, "training": {"epochs": 4, "lr": 0.01, "extra": {"weight_decay": 0.001}},
                           "teacher_training": {"epochs": 9}, "kd": [{"name": "graph", "w_kd": 2.5}]})
    t = cfg.train_dict("teacher", 2)
    s = cfg.train_dict("student", 1, cfg.kd_config("graph"))
    assert (t["epochs"], t["seed"], t["lr"], t["weight_decay"]) == (9, 9, 0.01, 0.001)
    assert (s["epochs"], s["seed"], s["w_kd"]) == (4, 8, 2.5)
    assert cfg.headline_kd == "graph"


def test_write_config_and_cli(tmp_path) -> None:
    from volkd.cli import app

    out = tmp_path / "study.yaml"
    write_config(out, "paper")
    assert load_config(out) == load_profile("paper").model_copy(update={"name": "study"})
    with pytest.raises(OutputExistsError):
        write_config(out, "quick")
    res = CliRunner().invoke(app, ["init-config", "--out", str(out), "--profile", "quick", "--force"])
    assert res.exit_code == 0, res.output
    assert load_config(out).config_hash() == load_profile("quick").config_hash() and load_config(out).name == "study"
    assert out.read_text().startswith("# volkd study config (from the built-in 'quick' profile)")


def test_baselines_key_is_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"key 'baselines.*unknown baseline 'svm'; choose one of sbr, majority"):
        validate_config({"baselines": ["svm"]})
    with pytest.raises(ConfigError, match=r"baseline listed twice: \['sbr'\]"):
        validate_config({"baselines": ["sbr", "sbr"]})


def test_sbr_baseline_refused_at_config_time_for_a_non_mni_cohort(tmp_path) -> None:
    folder = tmp_path / "ct-cohort"
    folder.mkdir()
    (folder / "cohort.json").write_text(json.dumps({"space": "unknown"}))
    data = {"dataset": {"kind": "cohort", "path": str(folder)}}
    with pytest.raises(ConfigError, match=r"key 'baselines'.*needs a cohort in MNI space.*space 'unknown'.*baselines: \[majority\]"):
        validate_config(data)
    cfg = validate_config({**data, "baselines": ["majority"]})
    assert cfg.baselines == ["majority"]
    (folder / "cohort.json").write_text(json.dumps({"space": "MNI"}))
    assert validate_config(data).baselines == ["sbr", "majority"]
