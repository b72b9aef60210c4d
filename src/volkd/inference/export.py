"""``export_model``: a checkpoint as ONNX or TorchScript, verified against PyTorch, with a model card.

The exported graph takes the scan already placed on the training grid (``N×D×H×W`` float32, raw
intensities) and returns class probabilities: the stored normalisation and — for every projection
but ``entropy`` — the projection run inside the graph (:mod:`volkd.inference.torch_ops`). For an
``entropy`` student the graph takes the projected images; normalising and projecting is a
documented pre-step (:func:`prepare_inputs`). Outputs are checked against
:func:`volkd.train.predict_proba` on random valid inputs (max abs difference ≤ :data:`TOLERANCE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from volkd.atomic import atomic_dir, check_output, probe_writable, write_json, write_text
from volkd.errors import ConfigError, VolkdError
from volkd.inference.grid import training_grid
from volkd.inference.model_card import model_card
from volkd.inference.torch_ops import IN_GRAPH_METHODS, TorchNormalizer, TorchProjection
from volkd.projection import project
from volkd.provenance import package_versions
from volkd.train import Checkpoint, load_checkpoint, predict_proba

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
CARD_FILE, META_FILE = "model_card.md", "export.json"
#: ONNX opset (18+: Resize with antialias, needed when views are resized)
OPSET = 18


class ExportError(VolkdError):
    """The model could not be exported, or the exported model disagrees with PyTorch."""


@dataclass
class ExportResult:
    """What was exported, where, and how closely it matches PyTorch."""

    format: str
    out_dir: Path
    model_file: Path
    card_file: Path
    input_name: str
    input_shape: list[Any]  # "N" then the per-scan shape
    preprocessing_in_graph: bool
    max_abs_diff: float
    n_checked: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``export.json``)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


class ExportedModel(nn.Module):
    """normalise → project (students) → network → softmax, as one module."""

    def __init__(self, model: nn.Module, normalizer: nn.Module | None, projection: nn.Module | None, volume_input: bool) -> None:
        super().__init__()
        self.model = model
        self.normalizer = normalizer
        self.projection = projection
        self.volume_input = volume_input  # teacher: add the channel axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalizer is not None:
            x = self.normalizer(x)
        if self.projection is not None:
            x = self.projection(x)
        elif self.volume_input:
            x = x.unsqueeze(1)
        return torch.softmax(self.model(x)[0], dim=1)


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): pip install volkd[export]") from None
    return onnx, onnxruntime


def prepare_inputs(ck: Any, volumes: np.ndarray) -> np.ndarray:
    """The pre-step of a model exported without in-graph projection: normalise then project (numpy)."""
    x = ck.build_normalizer().transform(np.asarray(volumes, dtype=np.float32))
    spec = ck.build_projection()
    return project(x, spec) if spec is not None else x[:, None]


def random_volumes(ck: Any, grid: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` random raw volumes the stored normaliser accepts (drawn around its statistics)."""
    rng = np.random.default_rng(seed)
    state = ck.normalizer
    z = rng.standard_normal((n, *grid)).astype(np.float32)
    if state["name"] == "zscore":
        return (np.asarray(state["mean"], np.float32) + np.asarray(state["std"], np.float32) * z).astype(np.float32)
    if state["name"] == "global_zscore":
        return (np.float32(state["mean"]) + np.float32(state["std"]) * z).astype(np.float32)
    if state["name"] == "reference":
        return (np.abs(z) + 0.5).astype(np.float32)  # positive: a valid reference-region mean
    return z


def build_exportable(ck: Any) -> tuple[ExportedModel, bool, tuple[int, ...]]:
    """The module to export, whether preprocessing runs in it, and its per-scan input shape."""
    grid = training_grid(ck).shape
    spec = ck.build_projection()
    model = ck.build_model()
    in_graph = spec is None or spec.method in IN_GRAPH_METHODS
    if in_graph:
        norm = TorchNormalizer(ck.normalizer, grid)
        proj = TorchProjection(spec, grid) if spec is not None else None
        return ExportedModel(model, norm, proj, spec is None).eval(), True, tuple(grid)
    return ExportedModel(model, None, None, False).eval(), False, tuple(spec.output_shape(grid))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporters' progress prints, warnings and log lines."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _export_onnx(module: ExportedModel, example: torch.Tensor, path: Path, input_name: str) -> Any:
    _, ort = _require_onnx()
    try:
        with _quiet():
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=OPSET, input_names=[input_name],
                              output_names=["probabilities"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
        raise ExportError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); try --format torchscript") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {input_name: x})[0]


def _export_torchscript(module: ExportedModel, example: torch.Tensor, path: Path) -> Any:
    try:
        with _quiet():
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(path))
            loaded = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"TorchScript export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); try --format onnx") from None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return run


def export_model(ckpt_path: str | Path | Any, out_dir: str | Path, format: str = "onnx", force: bool = False,
                 n_check: int = 3, seed: int = 0) -> ExportResult:
    """Export ``ckpt_path`` to ``out_dir`` (model file, ``model_card.md``, ``export.json``), verified to ≤ 1e-4."""
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} unknown; choose one of {list(FORMATS)}")
    out_dir = Path(out_dir)
    sources = [] if isinstance(ckpt_path, Checkpoint) else [ckpt_path]
    check_output(out_dir, force, "export", sources)
    probe_writable(out_dir)
    if format == "onnx":
        _require_onnx()
    ck = ckpt_path if isinstance(ckpt_path, Checkpoint) else load_checkpoint(ckpt_path)
    grid = training_grid(ck)
    module, in_graph, shape = build_exportable(ck)
    input_name = "volume" if in_graph else "images"
    notes = list(grid.notes)
    if not in_graph:
        notes.append("the entropy projection is not in the graph: normalise and project first "
                     "(volkd.inference.export.prepare_inputs, i.e. the checkpoint's normaliser then volkd.projection.project)")
    volumes = random_volumes(ck, grid.shape, n_check + 2, seed)
    example = volumes[:2] if in_graph else prepare_inputs(ck, volumes[:2])
    with atomic_dir(out_dir, force=force, kind="export", sources=sources) as tmp:
        path = tmp / MODEL_FILES[format]
        ex = torch.from_numpy(np.ascontiguousarray(example))
        run = _export_onnx(module, ex, path, input_name) if format == "onnx" else _export_torchscript(module, ex, path)
        check = volumes[2:]  # a batch size other than the example's: the batch axis is dynamic
        inputs = check if in_graph else prepare_inputs(ck, check)
        got = run(np.ascontiguousarray(inputs, dtype=np.float32))
        want = predict_proba(ck, check)
        diff = float(np.abs(got - want).max())
        if not diff <= TOLERANCE:
            raise ExportError(f"{format} export disagrees with PyTorch: max |Δ| = {diff:.3g} > {TOLERANCE:g} on {len(check)} random inputs")
        final = out_dir / MODEL_FILES[format]
        result = ExportResult(format, out_dir, final, out_dir / CARD_FILE, input_name, ["N", *shape], in_graph, diff, len(check), notes)
        info = {**result.to_dict(), "model_sha256": _sha256(path), "training_grid": grid.to_dict(),
                "normalizer": ck.normalizer["name"], "projection_spec": ck.projection_spec, "class_names": list(ck.class_names),
                "checkpoint": str(ck.path) if ck.path else None, "export_versions": export_versions(format)}
        write_json(tmp / META_FILE, info)
        write_text(tmp / CARD_FILE, model_card(ck, info))
    return result


def export_versions(format: str) -> dict[str, str]:
    """Versions of the packages that produced/checked the export."""
    out = {"torch": torch.__version__}
    if format == "onnx":
        out.update(package_versions(("onnx", "onnxscript", "onnxruntime"), python=False))
        out["opset"] = str(OPSET)
    out.update(package_versions(("volkd",), python=False))
    return out


__all__ = ["ExportError", "ExportResult", "FORMATS", "TOLERANCE", "export_model", "prepare_inputs", "random_volumes"]
