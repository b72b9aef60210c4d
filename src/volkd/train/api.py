"""Public training API: ``train_teacher``, ``train_student``, ``predict_proba``.

Both trainers refuse a leaky split, fit the normaliser on the training partition only, keep the
inputs in memory as tensors (teacher: normalised volumes, N·D·H·W·4 bytes — 1 MiB per scan at
64³; students: the projected images, computed once) and run :class:`volkd.train.loop.Loop`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from volkd.atomic import write_json, write_text
from volkd.data.cohort import Cohort
from volkd.data.normalize import Normalizer, get_normalizer
from volkd.data.splits import Split, SplitError, check_no_leakage, holdout_splits, load_splits, save_splits
from volkd.distill import KDLoss, get_kd_loss
from volkd.errors import ConfigError, LeakageError, OutputExistsError
from volkd.models import ModelSpec, build_model
from volkd.projection import ProjectionSpec, preset, project, resolve_reference
from volkd.provenance import package_versions, provenance
from volkd.train.checkpoint import Checkpoint, file_hash, load_checkpoint
from volkd.train.config import TrainConfig
from volkd.train.data import ArrayData, class_weights, normalized_volumes
from volkd.train.device import resolve_device
from volkd.train.distributed import barrier, context
from volkd.train.loop import BEST, HISTORY_CSV, HISTORY_JSONL, LAST, Loop, TeacherOutputs, classification_summary
from volkd.train.teacher_cache import cache_key, teacher_outputs

RESULT, CONFIG, SPLIT, PREDICTIONS, CACHE = "result.json", "config.json", "split.json", "test_predictions.csv", "teacher_cache.pt"
#: Files a run writes; ``force`` removes exactly these (never anything else in the folder).
RUN_FILES = (BEST, LAST, HISTORY_JSONL, HISTORY_CSV, RESULT, CONFIG, SPLIT, PREDICTIONS, CACHE)


@dataclass
class TrainResult:
    """What a training run produced (also written to ``result.json``)."""

    kind: str
    out_dir: Path
    monitor: str
    best_epoch: int
    best_metric: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    best_checkpoint: Path
    last_checkpoint: Path
    test_metrics: dict[str, float] | None = None
    test_predictions: pd.DataFrame | None = None
    teacher_cache_computed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (predictions go to their own CSV)."""
        d = asdict(self)
        d.pop("test_predictions")
        d.pop("history")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# ------------------------------------------------------------------ run folder
def prepare_run_dir(out_dir: str | Path, resume: bool = False, force: bool = False) -> Path:
    """Check ``out_dir`` may be written: a finished run needs ``force``; an interrupted one
    needs ``resume`` (continue) or ``force`` (start over; removes only volkd's run files)."""
    out = Path(out_dir)
    ours = [f for f in RUN_FILES if (out / f).exists()]
    if force:
        if context().is_main:
            for f in ours:
                (out / f).unlink()
    elif (out / RESULT).exists():
        raise OutputExistsError(f"{out}: holds a finished training run; choose another --out or pass --force to retrain")
    elif (out / LAST).exists() and not resume:
        raise OutputExistsError(f"{out}: holds an interrupted training run; pass --resume to continue it or --force to start over")
    elif ours and not resume:
        raise OutputExistsError(f"{out}: already holds training outputs ({', '.join(ours)}); pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    barrier(context())
    return out


# ------------------------------------------------------------------- helpers
def _config(config: TrainConfig | dict[str, Any] | None) -> TrainConfig:
    if config is None:
        return TrainConfig()
    return config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)


def _model_spec(spec: Any, **expect: Any) -> Any:
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(**dict(spec))
    bad = {k: (getattr(spec, k), v) for k, v in expect.items() if getattr(spec, k) != v}
    if bad:
        what = ", ".join(f"{k}={got} (expected {want})" for k, (got, want) in bad.items())
        raise ConfigError(f"model spec does not fit the data: {what}; build the spec from the cohort/projection")
    return spec


def _normalizer(cohort: Cohort, split: Split, name: str) -> Normalizer:
    kw: dict[str, Any] = {}
    if name == "reference":  # the cohort's space lets the normaliser refuse non-MNI data with a clear message
        kw["space"] = cohort.meta.space
        if cohort.meta.affine:
            kw["affine"] = cohort.meta.affine
    return get_normalizer(name, **kw).fit(cohort.volumes, split.train)


def _fingerprint(cohort: Cohort) -> str:
    return cohort.meta.fingerprint or cohort.fingerprint()


def _split_record(cohort: Cohort, split: Split) -> dict[str, Any]:
    ids = cohort.scan_ids
    return {"repeat": int(split.repeat), "seed": int(split.seed), "kind": split.kind,
            **{p: [str(s) for s in ids[split.partition(p)]] for p in ("train", "val", "test")}}


def _meta(kind: str, cohort: Cohort, split: Split, spec: Any, norm: Normalizer, config: TrainConfig, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind, "model_spec": spec.model_dump(mode="json"), "normalizer": norm.state_dict(),
        "class_names": cohort.class_names, "config": config.model_dump(mode="json"), "seed": int(config.seed),
        "versions": package_versions(), "cohort_fingerprint": _fingerprint(cohort), "split": _split_record(cohort, split),
        "train_subjects": sorted({str(s) for s in cohort.subjects[split.train]}),
        "projection_spec": None, "teacher_hash": None, "kd": None,
        # the cohort's grid, affine, space and import options: lets `volkd predict` place new scans
        "cohort_meta": cohort.meta.model_dump(mode="json"), **extra,
    }


def _data(x: np.ndarray, cohort: Cohort, idx: np.ndarray) -> ArrayData:
    return ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(cohort.y[idx]), torch.from_numpy(np.asarray(idx, dtype=np.int64)))


def _run(kind: str, cohort: Cohort, split: Split, model: torch.nn.Module, parts: dict[str, ArrayData], config: TrainConfig,
         out: Path, meta: dict[str, Any], spatial_dims: int, resume: bool, on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
         kd: Any = None, teacher: TeacherOutputs | None = None, cache_computed: bool | None = None,
         record: dict[str, Any] | None = None) -> TrainResult:
    ctx = context()
    if ctx.is_main:
        write_json(out / CONFIG, provenance(kind=kind, train_config=meta["config"], model_spec=meta["model_spec"],
                                            projection_spec=meta["projection_spec"], kd=meta["kd"],
                                            teacher_hash=meta["teacher_hash"], cohort_fingerprint=meta["cohort_fingerprint"],
                                            cohort_path=str(cohort.path) if cohort.path else None, **(record or {})))
        save_splits(out / SPLIT, [split], cohort, force=True)
    # computed for every option: it also refuses a class with no training scan
    weights = class_weights(parts["train"].y.numpy(), len(cohort.class_names), where=f"{out / SPLIT} train partition")
    cw = weights if config.class_weighting == "inverse_frequency" else None
    loop = Loop(model, parts["train"], parts["val"], config, out, meta, spatial_dims,
                class_weight=cw, kd=kd, teacher=teacher, on_epoch_end=on_epoch_end, ctx=ctx)
    fit = loop.run(resume=resume)
    best = load_checkpoint(fit.best_path)
    model.load_state_dict(best.state_dict)
    result = TrainResult(kind, out, config.monitor, fit.best_epoch, fit.best_metric, len(fit.history), fit.stopped_early,
                         fit.history, fit.best_path, fit.last_path, teacher_cache_computed=cache_computed)
    test = parts["test"]
    if len(test):
        proba = loop.predict(test)
        result.test_metrics = classification_summary(test.y, proba, cw)
        if config.save_test_predictions:
            idx = test.index.numpy()
            df = pd.DataFrame({"scan_id": cohort.scan_ids[idx], "subject_id": cohort.subjects[idx], "y_true": test.y.numpy(),
                               "y_pred": proba.argmax(1).numpy()})
            for j, c in enumerate(cohort.class_names):
                df[f"proba_{c}"] = proba[:, j].numpy()
            result.test_predictions = df
            if ctx.is_main:
                write_text(out / PREDICTIONS, df.to_csv(index=False))
    if ctx.is_main:
        write_json(out / RESULT, result.to_dict())
    barrier(ctx)
    return result


# ------------------------------------------------------------------- teacher
def train_teacher(cohort: Cohort, split: Split, model_spec: Any, config: TrainConfig | dict[str, Any] | None, out_dir: str | Path,
                  resume: bool = False, *, force: bool = False,
                  on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the 3D teacher on normalised volumes; checkpoints and logs go to ``out_dir``."""
    check_no_leakage(cohort, split)
    config = _config(config)
    spec = _model_spec(model_spec, spatial_dims=3, in_channels=1, n_views=1, num_classes=len(cohort.class_names))
    out = prepare_run_dir(out_dir, resume, force)
    norm = _normalizer(cohort, split, config.normalizer)
    parts = {p: _data(normalized_volumes(cohort.volumes, norm, split.partition(p))[:, None], cohort, split.partition(p))
             for p in ("train", "val", "test")}
    torch.manual_seed(config.seed)
    model = build_model(spec)
    meta = _meta("teacher", cohort, split, spec, norm, config)
    return _run("teacher", cohort, split, model, parts, config, out, meta, 3, resume, on_epoch_end)


# ------------------------------------------------------------------- student
def _projection(projection: Any, cohort: Cohort, split: Split) -> Any:
    spec = preset(projection) if isinstance(projection, str) else (
        projection if isinstance(projection, ProjectionSpec) else ProjectionSpec(**dict(projection)))
    # MNI space: the atlas gives the reference; otherwise the TRAINING scans' mean image does
    vols = None if cohort.meta.space == "MNI" else np.asarray(cohort.volumes[np.sort(split.train)])
    return resolve_reference(spec, cohort.meta, volumes=vols)


def _kd(kd: Any, w_kd: float) -> Any:
    """The KD loss object; for ``graph`` without an explicit ``w_metric``, ``w_metric = 1/w_kd``
    so the trainer's ``w_kd·total_kd`` is METHOD.md's ``w_kd·(L_fg + L_lg) + L_metric`` for any w_kd."""
    if isinstance(kd, KDLoss):
        return kd
    d = {"name": kd} if isinstance(kd, str) else dict(kd)
    name = d.pop("name")
    if name == "graph" and "w_metric" not in d and w_kd > 0:
        d["w_metric"] = 1.0 / w_kd
    return get_kd_loss(name, **d)


def projected_images(cohort: Cohort, norm: Normalizer, spec: Any, idx: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Normalised then projected images of ``cohort`` scans ``idx`` (computed chunk by chunk)."""
    parts = [project(normalized_volumes(cohort.volumes, norm, idx[i:i + chunk]), spec) for i in range(0, len(idx), chunk)]
    if not parts:
        return np.zeros((0, *spec.output_shape(tuple(cohort.meta.grid_shape))[1:]), np.float32)
    return np.concatenate(parts)


def check_teacher_compatible(teacher: Checkpoint, cohort: Cohort, split: Split) -> None:
    """The teacher must predict the same classes and must not have trained on the student's
    validation/test subjects (that would leak labels through KD)."""
    if teacher.kind != "teacher":
        raise ConfigError(f"{teacher.path}: is a {teacher.kind} checkpoint; --teacher needs a teacher's best.pt")
    if list(teacher.class_names) != cohort.class_names:
        raise ConfigError(f"{teacher.path}: teacher classes {teacher.class_names} differ from the cohort's {cohort.class_names}")
    seen = set(teacher.train_subjects)
    for p in ("val", "test"):
        bad = sorted(seen & {str(s) for s in cohort.subjects[split.partition(p)]})
        if bad:
            raise LeakageError(f"{teacher.path}: the teacher trained on subject(s) {bad[:5]} that are in the student's {p} "
                               f"partition; train the teacher on the same split (repeat {split.repeat})")


def train_student(cohort: Cohort, split: Split, projection: Any, model_spec: Any, kd: Any, teacher_ckpt: str | Path | None,
                  config: TrainConfig | dict[str, Any] | None, out_dir: str | Path, resume: bool = False, *, force: bool = False,
                  on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a 2D student on projected images, distilled from a frozen teacher's cached outputs."""
    check_no_leakage(cohort, split)
    config = _config(config)
    kd_loss = _kd(kd, config.w_kd)
    teacher = teacher_hash = None
    if kd_loss.requires_teacher:
        if teacher_ckpt is None:
            raise ConfigError(f"KD loss {kd_loss.name!r} needs a teacher checkpoint (--teacher best.pt)")
        teacher = load_checkpoint(teacher_ckpt)
        check_teacher_compatible(teacher, cohort, split)
        teacher_hash = file_hash(teacher_ckpt)
    spec = _projection(projection, cohort, split)
    mspec = _model_spec(model_spec, spatial_dims=2, in_channels=spec.in_channels, n_views=spec.n_views,
                        num_classes=len(cohort.class_names))
    out = prepare_run_dir(out_dir, resume, force)
    norm = _normalizer(cohort, split, config.normalizer)
    parts = {p: _data(projected_images(cohort, norm, spec, split.partition(p)), cohort, split.partition(p)) for p in ("train", "val", "test")}
    outputs, computed = None, None
    if teacher is not None:
        fp = _fingerprint(cohort)
        paths = [out / CACHE]
        if config.teacher_cache_dir:
            paths.append(Path(config.teacher_cache_dir) / f"{cache_key(teacher_hash, fp)}.pt")
        outputs, computed = teacher_outputs(teacher, teacher_hash, cohort, fp, paths, batch_size=config.eval_batch_size,
                                            device=str(resolve_device(config.device)), write=context().is_main)
    torch.manual_seed(config.seed)
    model = build_model(mspec)
    meta = _meta("student", cohort, split, mspec, norm, config, projection_spec=spec.model_dump(mode="json"),
                 teacher_hash=teacher_hash, kd=kd_loss.to_dict())
    return _run("student", cohort, split, model, parts, config, out, meta, 2, resume, on_epoch_end,
                kd=kd_loss if kd_loss.requires_teacher else None, teacher=outputs, cache_computed=computed,
                record={"teacher_checkpoint": str(teacher_ckpt) if teacher_ckpt else None})


# ------------------------------------------------------------------- predict
@torch.no_grad()
def predict_proba(ckpt: Checkpoint | str | Path, volumes: np.ndarray, batch_size: int = 32,
                  subjects: Sequence[str] | None = None) -> np.ndarray:
    """Class probabilities (N, classes) for raw ``volumes`` (N×D×H×W): the checkpoint's stored
    normalisation, projection (students) and model. ``subjects`` (optional) are refused if the
    model trained on any of them."""
    ck = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt)
    if subjects is not None:
        seen = sorted(set(ck.train_subjects) & {str(s) for s in subjects})
        if seen:
            raise LeakageError(f"{ck.path}: the model was trained on subject(s) {seen[:5]}; evaluate it on unseen subjects only")
    if getattr(volumes, "ndim", None) != 4:
        raise ConfigError(f"predict_proba: volumes must be N×D×H×W, got shape {getattr(volumes, 'shape', None)}")
    model, norm, spec = ck.build_model(), ck.build_normalizer(), ck.build_projection()
    out = []
    for i in range(0, volumes.shape[0], batch_size):
        x = normalized_volumes(volumes, norm, np.arange(i, min(i + batch_size, volumes.shape[0])))
        if spec is None:
            x = x[:, None]
        else:
            x = project(x, spec)
        out.append(torch.softmax(model(torch.from_numpy(x))[0].float(), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ck.class_names)), np.float32)


# ------------------------------------------------------------- CLI support
def resolve_split(cohort: Cohort, split_file: str | Path | None = None, repeat: int = 0) -> Split:
    """Repeat ``repeat`` of ``split_file``, or of the default subject-level 60/20/20 hold-out (seed 0)."""
    if repeat < 0:
        raise ConfigError(f"--repeat must be ≥ 0, got {repeat}")
    splits = load_splits(split_file, cohort) if split_file is not None else holdout_splits(cohort, n_repeats=repeat + 1, fractions=(0.6, 0.2, 0.2), seed=0)
    if repeat >= len(splits):
        raise SplitError(f"{split_file}: has {len(splits)} split(s); --repeat {repeat} is out of range")
    return splits[repeat]


def student_model_spec(arch: str, projection: Any, num_classes: int, **kw: Any) -> Any:
    """A 2D ``ModelSpec`` whose input matches ``projection`` (channels, views)."""
    spec = preset(projection) if isinstance(projection, str) else projection
    if not isinstance(spec, ProjectionSpec):
        spec = ProjectionSpec(**dict(spec))
    return ModelSpec(arch=arch, spatial_dims=2, in_channels=spec.in_channels, n_views=spec.n_views, num_classes=num_classes, **kw)
