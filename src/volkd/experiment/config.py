"""StudyConfig: one validated YAML file describes a whole 3D-to-2D distillation study.

Profiles (``quick``, ``paper``) ship as annotated YAML files in ``volkd/configs``;
:func:`annotated_yaml` writes any config back with a comment above every key.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from volkd.atomic import check_output, probe_writable, write_text
from volkd.data.cohort import META_FILE
from volkd.distill import get_kd_loss
from volkd.errors import ConfigError, describe_validation_error, listed_once, one_of
from volkd.train.config import TrainConfig

#: Projection preset names understood by ``volkd.projection.preset``.
PROJECTIONS: tuple[str, ...] = ("slice", "slices", "mip", "mean", "std", "entropy", "dynamic", "early", "joint", "fuseme")
#: KD loss names understood by ``volkd.distill.get_kd_loss``.
KD_METHODS: tuple[str, ...] = ("none", "graph", "hinton", "sp", "rkd")
#: Model architectures understood by ``volkd.models.build_model``.
ARCHS: tuple[str, ...] = ("resnet10", "resnet18", "resnet34", "densenet121", "lightcnn")
#: Metrics computed per trial by ``volkd.evaluate.classification_metrics``.
METRICS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "f1_micro", "sensitivity",
    "specificity", "g_mean", "roc_auc", "brier", "ece",
)
PROFILES: tuple[str, ...] = ("quick", "paper")
#: Reference baselines a study can run beside the networks (``baselines`` key).
BASELINES: tuple[str, ...] = ("sbr", "majority")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    """Where the scans come from: the built-in synthetic generator or a cohort folder."""

    kind: Literal["synthetic", "cohort"] = Field("synthetic", description="`synthetic` (built-in DaTscan-like generator) or `cohort` (a folder made by `volkd import` / `volkd synth`)")
    path: str | None = Field(None, description="cohort folder (kind: cohort only); relative paths are read from the working directory")
    n_subjects: int = Field(200, ge=8, description="synthetic: number of subjects")
    grid: int = Field(32, ge=8, le=256, description="synthetic: cubic grid size in voxels (the study resizes to 64)")
    modality: Literal["spect", "pet"] = Field("spect", description="synthetic: `spect` (DaTscan-like) or `pet` (AV133-like)")
    seed: int = Field(0, description="synthetic: generator seed (the same seed gives the same cohort)")
    options: dict[str, Any] = Field(default_factory=dict, description="synthetic: extra keyword arguments for volkd.data.synth.synthesize")

    @model_validator(mode="after")
    def _path_for_cohort(self) -> "DatasetConfig":
        if self.kind == "cohort" and not self.path:
            raise ValueError("kind is 'cohort' but no path is given; set path to a cohort folder or use kind: synthetic")
        return self


class ExternalConfig(DatasetConfig):
    """A cohort evaluated with the models trained on the main cohort (no retraining)."""

    name: str = Field(..., min_length=1, description="label used in the report's external-evaluation table")


class SplitConfig(_Strict):
    """Subject-level split protocol and how many repeats."""

    protocol: Literal["holdout", "kfold", "official"] = Field("holdout", description="`holdout` (stratified train/val/test, repeated), `kfold` (one repeat per fold) or `official` (the cohort's `split` column, one repeat)")
    repeats: int = Field(3, ge=1, description="holdout: number of repeats; kfold: number of folds k (≥ 2); official: must be 1")
    fractions: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="holdout: train/val/test fractions (sum to 1)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="kfold: fraction of each training fold held out for validation")
    seed: int = Field(0, description="seed of the splitter")

    @model_validator(mode="after")
    def _consistent(self) -> "SplitConfig":
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"fractions must be three positive numbers summing to 1, got {list(self.fractions)}")
        if self.protocol == "kfold" and self.repeats < 2:
            raise ValueError("protocol kfold needs repeats (= k folds) ≥ 2")
        if self.protocol == "official" and self.repeats != 1:
            raise ValueError("protocol official has exactly one split: set repeats: 1")
        return self


class ModelConfig(_Strict):
    """A network (see volkd.models.ModelSpec); channels, views and classes come from the data."""

    arch: str = Field("lightcnn", description=f"one of {', '.join(ARCHS)}")
    width: int | None = Field(None, ge=4, description="channels of the first stage (null: the arch's default)")
    stem_stride: int = Field(2, ge=1, description="stride of the first convolution")
    stem_kernel: int = Field(7, ge=1, description="kernel size of the first convolution (odd)")

    _arch = field_validator("arch")(one_of("arch", ARCHS))


class KDConfig(_Strict):
    """One distillation method applied to every projection."""

    name: str = Field(..., description=f"KD loss: one of {', '.join(KD_METHODS)} (`none` = the student's no-KD baseline)")
    w_kd: float = Field(5.0, ge=0, description="weight of the KD loss (the study: 5)")
    temperature: float = Field(5.0, gt=0, description="softmax temperature T for logit terms (the study: 5)")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for volkd.distill.get_kd_loss (e.g. affinity: cosine)")

    _name = field_validator("name")(one_of("KD method", KD_METHODS))


class TrainingConfig(_Strict):
    """Training budget shared by teacher and students (volkd.train.TrainConfig fields)."""

    epochs: int = Field(20, ge=1, description="maximum epochs")
    patience: int = Field(5, ge=1, description="early stopping: epochs without improvement on validation")
    batch_size: int = Field(32, ge=2, description="mini-batch size (the graph KD compares B×B relations)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    optimizer: Literal["radam", "adam", "adamw"] = Field("radam", description="radam (the study), adam or adamw")
    scheduler: Literal["cosine_warm_restarts", "cosine", "none"] = Field("cosine_warm_restarts", description="learning-rate schedule (the study: cosine annealing with warm restarts)")
    monitor: Literal["val_loss", "val_balanced_accuracy", "val_auc", "val_accuracy"] = Field("val_loss", description="validation quantity for early stopping and best checkpoint")
    extra: dict[str, Any] = Field(default_factory=dict, description="any other volkd.train.TrainConfig field (e.g. weight_decay, augment)")


class TeacherTrainingConfig(_Strict):
    """Overrides of the training budget for the 3D teacher only (null: same as students)."""

    epochs: int | None = Field(None, ge=1, description="maximum epochs for the teacher")
    patience: int | None = Field(None, ge=1, description="early-stopping patience for the teacher")
    batch_size: int | None = Field(None, ge=2, description="teacher mini-batch size")
    lr: float | None = Field(None, gt=0, description="teacher learning rate")


class ReportConfig(_Strict):
    """What the report shows."""

    headline_metric: str = Field("f1_weighted", description=f"metric of the headline table; one of {', '.join(METRICS)}")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level for the paired tests")
    gallery_scans: int = Field(2, ge=1, le=6, description="example scans per class in the projection gallery")
    graph_batch: int = Field(16, ge=4, le=128, description="test scans in the batch-relation-graph heatmaps")
    latency_runs: int = Field(10, ge=1, description="timed forward passes per model for the CPU latency column")

    _metric = field_validator("headline_metric")(one_of("metric", METRICS))


class ExecutionConfig(_Strict):
    """Where the trials run (never part of the config hash: results are the same either way)."""

    executor: Literal["local", "ray"] = Field("local", description="`local` (one trial after another in this process) or `ray` (trials as Ray tasks; `pip install volkd[cluster]`)")
    address: str | None = Field(None, description="ray: address of a running cluster (HOST:PORT, or `auto`); null starts a local Ray instance")
    num_cpus: int | None = Field(None, ge=1, description="ray without address: CPUs the local Ray instance may use (null: all of this machine's)")
    cpus_per_trial: float = Field(1.0, gt=0, description="ray: CPUs reserved by each trial (also its torch threads)")
    gpus_per_trial: float = Field(0.0, ge=0, description="ray: GPUs reserved by each trial (> 0 trains on CUDA unless training.extra.device is set)")
    max_retries: int = Field(0, ge=0, description="times a failed trial is run again (both executors) before it is recorded as failed")


class StudyConfig(_Strict):
    """A complete study: data, splits, teacher, student, projections × KD methods, budget."""

    name: str = Field("study", min_length=1, description="study name (report title; `volkd run` writes to volkd-runs/<profile or config file name> unless --out)")
    seed: int = Field(0, description="training seed; repeat r trains with seed + r")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, description="the main cohort")
    split: SplitConfig = Field(default_factory=SplitConfig, description="subject-level split protocol")
    teacher: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="lightcnn"), description="3D teacher network (sees the whole volume)")
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="lightcnn"), description="2D student network (sees projections)")
    projections: list[str] = Field(default_factory=lambda: ["slices", "mip", "early", "fuseme"], min_length=1, description=f"2D projection presets; allowed: {', '.join(PROJECTIONS)}")
    kd: list[KDConfig] = Field(default_factory=lambda: [KDConfig(name="none"), KDConfig(name="graph")], min_length=1, description="KD methods; include `none` for the no-KD baseline")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="training budget (teacher and students)")
    teacher_training: TeacherTrainingConfig = Field(default_factory=TeacherTrainingConfig, description="teacher-only overrides of the budget")
    external: list[ExternalConfig] = Field(default_factory=list, description="cohorts evaluated without retraining (e.g. the synthetic PET variant)")
    baselines: list[str] = Field(default_factory=lambda: list(BASELINES), description="reference baselines run on every split: `sbr` (striatal binding ratios + logistic regression; MNI-space cohorts only) and `majority` (always predicts the training partition's majority class); [] for none")
    report: ReportConfig = Field(default_factory=ReportConfig, description="report options")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, description="how trials are executed: locally or on a Ray cluster (see docs/scaling.md)")

    _projections = field_validator("projections")(one_of("projection", PROJECTIONS))
    _projections_once = field_validator("projections")(listed_once("projection"))
    _kd_once = field_validator("kd")(listed_once("KD method", lambda k: k.name))
    _external_once = field_validator("external")(listed_once("external cohort name", lambda e: e.name))
    _baselines = field_validator("baselines")(one_of("baseline", BASELINES))
    _baselines_once = field_validator("baselines")(listed_once("baseline"))

    # ------------------------------------------------------------------ helpers
    @property
    def kd_names(self) -> list[str]:
        return [k.name for k in self.kd]

    @property
    def headline_kd(self) -> str | None:
        """The KD method compared with `none` in the headline table (first non-`none`)."""
        return next((k for k in self.kd_names if k != "none"), None)

    def kd_config(self, name: str) -> KDConfig:
        return next(k for k in self.kd if k.name == name)

    def config_hash(self) -> str:
        """SHA-256 of everything that shapes results (the study's name and execution excluded)."""
        d = self.model_dump(mode="json", exclude={"name", "execution"})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def train_dict(self, role: Literal["teacher", "student"], repeat: int, kd: KDConfig | None = None) -> dict[str, Any]:
        """The volkd.train.TrainConfig fields for one trial (seed = seed + repeat)."""
        t = self.training
        d: dict[str, Any] = {
            "epochs": t.epochs, "patience": t.patience, "batch_size": t.batch_size, "lr": t.lr,
            "optimizer": t.optimizer, "scheduler": t.scheduler, "monitor": t.monitor,
            "seed": self.seed + repeat, **t.extra,
        }
        if role == "teacher":
            d.update({k: v for k, v in self.teacher_training.model_dump().items() if v is not None})
        if kd is not None:
            d["w_kd"] = kd.w_kd
        return d


# ---------------------------------------------------------------------- loading
def validate_config(data: Any, where: str = "study config") -> StudyConfig:
    """Validate a mapping; raise :class:`ConfigError` naming the bad key and allowed values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (name, dataset, split, ...), got {type(data).__name__}")
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe_validation_error(e, StudyConfig, noun='key')}") from None
    _check_train_extra(cfg, where)
    _check_kd_params(cfg, where)
    _check_baselines(cfg, where)
    _check_normalizer(cfg, where)
    return cfg


def _cohort_space(cfg: StudyConfig) -> tuple[str, Path] | None:
    """(space, cohort.json) of the main cohort folder as its ``cohort.json`` says; None for the synthetic
    generator (always MNI) or a folder that cannot be read yet (left to the data loader's own error)."""
    if cfg.dataset.kind != "cohort":
        return None
    meta_file = Path(str(cfg.dataset.path)).expanduser() / META_FILE
    try:
        return str(json.loads(meta_file.read_text()).get("space", "unknown")), meta_file
    except (OSError, ValueError, AttributeError):
        return None


def _check_baselines(cfg: StudyConfig, where: str) -> None:
    """Refuse the SBR baseline at config time when the cohort folder says it is not in MNI space
    (the atlas ROIs would fall on the wrong voxels)."""
    found = _cohort_space(cfg) if "sbr" in cfg.baselines else None
    if found is not None and found[0] != "MNI":
        space, meta_file = found
        raise ConfigError(f"{where}: key 'baselines': the SBR baseline needs a cohort in MNI space (atlas ROIs), but "
                          f"{meta_file} says space {space!r}; remove `sbr` from baselines (e.g. baselines: [majority])")


def _check_normalizer(cfg: StudyConfig, where: str) -> None:
    """Refuse reference normalisation at config time when the cohort folder says it is not in MNI space
    (the atlas occipital region would fall on the wrong voxels)."""
    found = _cohort_space(cfg) if cfg.training.extra.get("normalizer") == "reference" else None
    if found is not None and found[0] != "MNI":
        space, meta_file = found
        raise ConfigError(f"{where}: key 'training.extra.normalizer': reference divides by the atlas occipital region, "
                          f"which needs a cohort in MNI space, but {meta_file} says space {space!r}; use normalizer: zscore "
                          "(`volkd init-config --cohort DIR` writes a config fitted to the cohort)")


def _check_kd_params(cfg: StudyConfig, where: str) -> None:
    """Build each KD loss once so a bad parameter is reported with its key."""
    for i, kd in enumerate(cfg.kd):
        try:
            get_kd_loss(kd.name, **kd.params)
        except ConfigError as e:
            raise ConfigError(f"{where}: key 'kd.{i}.params' ({kd.name}): {e}") from None
        except (TypeError, ValueError, ArithmeticError) as e:  # a parameter of the wrong type (e.g. w_fg: null)
            raise ConfigError(f"{where}: key 'kd.{i}.params' ({kd.name}): invalid value in {kd.params!r} ({e})") from None


def _check_train_extra(cfg: StudyConfig, where: str) -> None:
    """Check ``training.extra`` against volkd.train.TrainConfig."""
    unknown = sorted(set(cfg.training.extra) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in 'training.extra': {unknown}; allowed: {', '.join(TrainConfig.model_fields)}")
    try:
        TrainConfig.model_validate(cfg.train_dict("student", 0))
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe_validation_error(e, TrainConfig, noun='key', prefix='training.')}") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file (an empty file, or one that is not a mapping of keys, is an error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study config not found; write one with `volkd init-config --out {path}`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    if data is None:
        raise ConfigError(f"{path}: the study config is empty; write one with `volkd init-config --out {path}` "
                          "(or run a built-in profile: `volkd run --profile quick`)")
    return validate_config(data, where=str(path))


def load_profile(name: str) -> StudyConfig:
    """The built-in profile ``quick`` or ``paper`` (packaged YAML files)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}")
    text = resources.files("volkd").joinpath("configs", f"{name}.yaml").read_text()
    return validate_config(yaml.safe_load(text), where=f"built-in profile {name!r}")


# ---------------------------------------------------------------------- writing
def annotated_yaml(cfg: StudyConfig, header: str | None = None, notes: dict[str, list[str]] | None = None) -> str:
    """The config as YAML with a comment above every key (its description).

    ``notes`` maps dotted keys (``split.protocol``, ``training.extra``) to extra comment lines written
    under that key's description (e.g. why a value was chosen).
    """
    lines: list[str] = []
    if header:
        lines += [f"# {h}" if h else "#" for h in header.splitlines()] + [""]
    _emit_model(cfg, lines, 0, notes=notes or {})
    return "\n".join(lines) + "\n"


def _emit_model(model: BaseModel, lines: list[str], indent: int, top: bool = True, notes: dict[str, list[str]] | None = None,
                prefix: str = "") -> None:
    pad = " " * indent
    notes = notes or {}
    for name, field in _ordered_fields(type(model)):
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        lines += [f"{pad}# {n}" for n in notes.get(prefix + name, [])]
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit_model(value, lines, indent + 2, top=False, notes=notes, prefix=f"{prefix}{name}.")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:")
            for key, f in _ordered_fields(type(value[0])):
                if f.description:
                    lines.append(f"{pad}#   {key}: {f.description}")
            for item in value:
                sub: list[str] = []
                _emit_model(item, sub, 0, top=False)
                first = True
                for s in sub:
                    if s.lstrip().startswith("#"):
                        continue  # keys of list items are described once, above the list
                    lines.append(f"{pad}  {'- ' if first else '  '}{s}")
                    first = False
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
        if top:
            lines.append("")


def _ordered_fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """Fields in declaration order, ``name`` first (list items read better that way)."""
    items = list(model.model_fields.items())
    return sorted(items, key=lambda kv: kv[0] != "name")


def _scalar(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip().removesuffix("\n...").strip()


def config_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """JSON-serialisable dict of the config."""
    return cfg.model_dump(mode="json")


def write_config(path: str | Path, profile: str = "quick", force: bool = False) -> Path:
    """Write the annotated YAML of a built-in profile to ``path`` (refuses to overwrite unless ``force``)."""
    path = Path(path)
    check_output(path, force)
    probe_writable(path)
    cfg = load_profile(profile).model_copy(update={"name": path.stem or profile})
    header = (f"volkd study config (from the built-in '{profile}' profile).\n"
              "Edit the values, then run: volkd run " + str(path) + "\n"
              "Every key is optional: a missing key takes the default shown by `volkd init-config`.")
    write_text(path, annotated_yaml(cfg, header))
    return path
