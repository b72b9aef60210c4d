"""Grad-CAM (MONAI's ``monai.visualize.GradCAM``) for students (per projected view) and teachers (3D).

The target layer is the backbone's last convolution in execution order, found by running the
model once with forward hooks (:func:`last_conv_layers`). Students get one map per view on the
projected image (joint fusion: one per view input; early fusion: one map over the stacked views);
teachers get a 3-D map on the training grid, written as a NIfTI resampled back onto the INPUT
scan's own grid and affine, plus axial/coronal/sagittal overlays through the striatum.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from volkd.atomic import atomic_dir, check_output, probe_writable
from volkd.data.atlas import striatum_center
from volkd.data.resample import resample_to_grid
from volkd.errors import ConfigError, VolkdError
from volkd.inference.grid import TrainingGrid, training_grid
from volkd.inference.inputs import ScanInput, Skipped, collect_inputs, iter_loaded
from volkd.inference.predict import NoScansError, PredictionWarning, prepare_scan
from volkd.paths import UniqueNames
from volkd.projection import orient, project
from volkd.train import Checkpoint, load_checkpoint

INDEX_FILE = "explain.csv"
_CONV = (nn.Conv2d, nn.Conv3d)


class _Logits(nn.Module):
    """``model(x)[0]``; for a multi-view model the views come as the batch: (V, C, H, W) → (1, V, C, H, W).

    Feeding the views as the batch lets MONAI upsample each view's map to (H, W).
    """

    def __init__(self, model: nn.Module, multiview: bool) -> None:
        super().__init__()
        self.model = model
        self.multiview = multiview

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.unsqueeze(0) if self.multiview else x)[0]


def last_conv_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the last convolution executed by ``model(example)`` whose output still has more than
    one spatial position (a 1-voxel map cannot localise anything), one per encoder (several only when
    multi-view encoders are not shared: then one per view, in view order)."""
    order: list[tuple[str, int]] = []

    def hook(name: str) -> Any:
        return lambda _m, _i, out: order.append((name, int(np.prod(out.shape[2:]))))

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if isinstance(m, _CONV)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    spatial = [n for n, size in order if size > 1]
    if not spatial:
        raise ConfigError(f"{type(model).__name__}: no convolution with a spatial output (> 1 voxel) for Grad-CAM; "
                          "the input grid is too small for this network")
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "encoders") and not enc.shared:
        return [[n for n in spatial if n.startswith(f"encoder.encoders.{v}.")][-1] for v in range(len(enc.encoders))]
    return [spatial[-1]]


@dataclass
class Explanation:
    """Grad-CAM of one scan: maps (per view, or ``volume``) in [0, 1], the explained class, files written."""

    scan_id: str
    source: str
    class_name: str
    proba: np.ndarray
    maps: dict[str, np.ndarray]
    files: list[str] = field(default_factory=list)


def _cams(model: nn.Module, multiview: bool, layers: list[str]) -> list[Any]:
    from monai.visualize import GradCAM

    wrapper = _Logits(model, multiview).eval()  # MONAI restores the wrapper's mode after each call
    return [GradCAM(nn_module=wrapper, target_layers=f"model.{name}") for name in layers]


def _view_images(spec: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """Each view slot's display image (its middle channel) from one scan's projection."""
    c = spec.channels_per_view
    if spec.multiview:
        return {v: images[i, c // 2] for i, v in enumerate(spec.slots)}
    return {v: images[i * c + c // 2] for i, v in enumerate(spec.slots)}


def _overlay(ax: Any, image: np.ndarray, cam: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _save_png(path: Path, panels: list[tuple[np.ndarray, np.ndarray, str]], suptitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (img, cam, title) in zip(axes[0], panels):
        _overlay(ax, img, cam, title)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _slice_center(grid: TrainingGrid, cam: np.ndarray) -> tuple[int, int, int]:
    if grid.space == "MNI":
        try:
            return striatum_center(grid.shape, grid.affine)
        except (IndexError, ValueError):  # striatum outside the grid
            pass
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape))  # type: ignore[return-value]


def _input_geometry(item: ScanInput, shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """The INPUT's own grid: a NIfTI file's header (any orientation), else the scan as read (RAS)."""
    if item.kind == "nifti":
        import nibabel as nib

        img = nib.load(item.path)
        return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)  # type: ignore[return-value]
    return tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=np.float64)  # type: ignore[return-value]


def explain_scans(ckpt_path: str | Path | Any, inputs: Sequence[str | Path], out_dir: str | Path, class_name: str | None = None,
                  force: bool = False) -> tuple[list[Explanation], list[Skipped]]:
    """Grad-CAM maps and overlays for every scan in ``inputs`` (the predicted class unless ``class_name``), in ``out_dir``.

    File names come from the scan IDs through :func:`volkd.paths.safe_name` (made unique);
    ``explain.csv`` maps each scan ID to its files.
    """
    import nibabel as nib

    out_dir = Path(out_dir)
    sources = [*inputs] + ([] if isinstance(ckpt_path, Checkpoint) else [ckpt_path])
    check_output(out_dir, force, "explain", sources)
    probe_writable(out_dir)
    ck = ckpt_path if isinstance(ckpt_path, Checkpoint) else load_checkpoint(ckpt_path)
    if class_name is not None and class_name not in ck.class_names:
        raise ConfigError(f"--class {class_name!r} is not a class of this model; choose one of {ck.class_names}")
    grid = training_grid(ck)
    for note in grid.notes:
        warnings.warn(note, PredictionWarning, stacklevel=2)
    model, norm, spec = ck.build_model(), ck.build_normalizer(), ck.build_projection()
    items, skipped = collect_inputs(list(inputs))
    results: list[Explanation] = []
    cams: list[Any] | None = None
    names = UniqueNames()
    with atomic_dir(out_dir, force=force, kind="explain", sources=sources) as tmp:
        for item, scan in iter_loaded(items):
            if isinstance(scan, Skipped):
                skipped.append(scan)
                continue
            try:
                vol, vol_affine = prepare_scan(item, scan, grid)
                x = norm.transform(vol[None])
            except VolkdError as e:
                skipped.append(Skipped(item.source, str(e).removeprefix(f"{item.source}: ")))
                continue
            inp = project(x, spec)[0] if spec is not None else x  # (C,H,W) | (V,C,H,W) | (1,D,H,W)
            t = torch.from_numpy(np.ascontiguousarray(inp if spec is not None and spec.multiview else inp[None]))
            if cams is None:
                layers = last_conv_layers(model, t.unsqueeze(0) if spec is not None and spec.multiview else t)
                cams = _cams(model, bool(spec is not None and spec.multiview), layers)
            with torch.no_grad():
                logits = model(t.unsqueeze(0) if spec is not None and spec.multiview else t)[0]
            proba = torch.softmax(logits.float(), 1)[0].numpy()
            k = int(np.argmax(proba)) if class_name is None else ck.class_names.index(class_name)
            name = names.name(item.scan_id)
            ex = Explanation(item.scan_id, item.source, ck.class_names[k], proba, {})
            title = f"{item.scan_id}: Grad-CAM for {ck.class_names[k]} (p = {proba[k]:.2f})"
            if spec is None:
                cam = cams[0](t, class_idx=k)[0, 0].detach().numpy().astype(np.float32)
                ex.maps["volume"] = cam
                shape, affine = _input_geometry(item, scan.data.shape, scan.affine)
                native = resample_to_grid(cam, vol_affine, shape, affine, order=1)
                nib.save(nib.Nifti1Image(native.astype(np.float32), affine), tmp / f"{name}_gradcam.nii.gz")
                c = _slice_center(grid, cam)
                panels = [(orient(vol.take(c[ax], axis=ax)[None])[0], orient(cam.take(c[ax], axis=ax)[None])[0], f"{view} slice {c[ax]}")
                          for view, ax in (("axial", 2), ("coronal", 1), ("sagittal", 0))]
                _save_png(tmp / f"{name}_gradcam.png", panels, title)
                ex.files += [f"{name}_gradcam.nii.gz", f"{name}_gradcam.png"]
            else:
                images = _view_images(spec, inp)
                if spec.multiview:
                    per = [cam(t, class_idx=k).detach().numpy()[:, 0] for cam in cams]  # shared: (V,H,W); per-view encoders: V × (1,H,W)
                    maps = per[0] if len(per) == 1 else np.concatenate(per)
                    ex.maps = {v: maps[i].astype(np.float32) for i, v in enumerate(spec.slots)}
                else:
                    m = cams[0](t, class_idx=k)[0, 0].detach().numpy().astype(np.float32)
                    ex.maps = {v: m for v in spec.slots}
                panels = [(images[v], ex.maps[v], v) for v in spec.slots]
                _save_png(tmp / f"{name}_gradcam.png", panels, title)
                np.savez_compressed(tmp / f"{name}_gradcam.npz", **ex.maps)
                ex.files += [f"{name}_gradcam.png", f"{name}_gradcam.npz"]
            results.append(ex)
        if not results:
            reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:5]) or "no inputs given"
            raise NoScansError(f"no scan could be explained ({len(skipped)} skipped): {reasons}")
        rows = [{"scan_id": r.scan_id, "source": r.source, "explained_class": r.class_name,
                 **{f"proba_{c}": float(r.proba[j]) for j, c in enumerate(ck.class_names)}, "files": ";".join(r.files)}
                for r in results]
        pd.DataFrame(rows).to_csv(tmp / INDEX_FILE, index=False)
        if skipped:
            pd.DataFrame([s.to_dict() for s in skipped], columns=["source", "reason"]).to_csv(tmp / "skipped.csv", index=False)
    return results, skipped
