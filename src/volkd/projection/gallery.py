"""PNG gallery of projections: what the 2D student sees, per method × view, for a few scans per class."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from volkd.atomic import atomic_file
from volkd.data.cohort import Cohort
from volkd.errors import ConfigError
from volkd.projection.methods import METHODS
from volkd.projection.project import project
from volkd.projection.reference import resolve_reference
from volkd.projection.spec import ProjectionSpec

#: Panel width (inches) and the title font size (points); a title line holds at most TITLE_CHARS characters.
PANEL_IN, TITLE_PT = 1.3, 7
TITLE_CHARS = 16
#: Height (inches) of one line of the scan-ID footer.
FOOTER_LINE_IN = 0.15


def short_label(text: str, width: int = TITLE_CHARS) -> str:
    """``text`` cut to ``width`` characters (ending in …) so that a panel title never runs into its neighbour."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def column_labels(class_names: list[str], y: np.ndarray) -> tuple[list[str], list[str]]:
    """Column labels ``<class> <k>`` (the k-th example of its class): shortened to fit a panel title, and in full."""
    seen: dict[int, int] = {}
    short, full = [], []
    for k in (int(v) for v in y):
        seen[k] = seen.get(k, 0) + 1
        num = f" {seen[k]}"
        short.append(short_label(class_names[k], TITLE_CHARS - len(num)) + num)
        full.append(class_names[k] + num)
    return short, full


def _wrap(text: str, width_in: float, points: float) -> str:
    """``text`` wrapped to a figure ``width_in`` inches wide at ``points`` (long IDs are broken, never clipped)."""
    chars = max(20, int(width_in * 72 / (0.62 * points)))
    return "\n".join(textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False))


def pick_scans(cohort: Cohort, n_per_class: int = 2) -> np.ndarray:
    """Indices of the first ``n_per_class`` scans of each class, in class order."""
    if n_per_class < 1:
        raise ConfigError(f"gallery: n_per_class must be ≥ 1, got {n_per_class}")
    y = cohort.y
    return np.concatenate([np.flatnonzero(y == k)[:n_per_class] for k in range(len(cohort.class_names))]).astype(np.int64)


def _offset(k: int) -> str:
    return "c" if k == 0 else f"c{'+' if k > 0 else '−'}{abs(k)}"


def gallery_rows(images: np.ndarray, spec: ProjectionSpec) -> list[tuple[str, np.ndarray]]:
    """One labelled row per output channel of ``spec``: (label, array N×V×H×W over the spec's view slots)."""
    n, c = images.shape[0], spec.channels_per_view
    per_view = images if spec.multiview else images.reshape((n, len(spec.slots), c) + images.shape[-2:])
    rows = []
    for k in range(c):
        what = _offset(k - spec.epsilon) if spec.method == "slices" else ("c" if spec.method == "slice" else "")
        rows.append((f"{spec.label}" + (f"\n{what}" if what else ""), per_view[:, :, k]))
    return rows


def gallery_figure(cohort: Cohort, specs: list[ProjectionSpec], n_per_class: int = 2, cmap: str = "gray") -> Any:
    """The gallery as a matplotlib ``Figure``: one row per spec × channel; one column per scan × view.

    Column titles are short (``PD 1``: first PD example, and the view with its reference slice
    or slab); the full scan IDs are in a footer under the panels, so long IDs never overlap. All
    specs must share their view slots (views, and the sagittal split of ``ref_mode``). Each panel
    is min–max scaled on its own.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not specs:
        raise ConfigError("gallery: no projection specs given")
    views = specs[0].slots
    if any(s.slots != views for s in specs):
        raise ConfigError(f"gallery: all specs must share their views; got {[s.slots for s in specs]}")
    idx = pick_scans(cohort, n_per_class)
    vols = np.asarray(cohort.volumes[idx], dtype=np.float32)
    names, full = column_labels(list(cohort.class_names), cohort.y[idx])
    rows: list[tuple[str, np.ndarray]] = []
    refs: dict[str, str] = {}
    for spec in specs:
        if spec.grid_shape is None:
            spec = resolve_reference(spec, cohort)
        for slot in spec.slots:
            if METHODS[spec.method].needs_reference:
                midline = ", midline" if slot == "sagittal" and spec.ref_source == "atlas" else ""  # between the striata: say so
                refs.setdefault(slot, f"c={(spec.ref_index or {})[slot]}{midline}")
            elif spec.needs_axis_range(slot) and spec.axis_range and slot in spec.axis_range:
                first, stop = spec.axis_range[slot]
                refs.setdefault(slot, f"{first}–{stop - 1}")
        rows += gallery_rows(project(vols, spec), spec)
    nrows, ncols = len(rows), len(idx) * len(views)
    width = PANEL_IN * ncols + 0.9
    footer = _wrap("Columns: " + "; ".join(f"{n} = {sid}" for n, sid in zip(full, cohort.scan_ids[idx])), width, TITLE_PT)
    title = _wrap(f"{cohort.path or 'cohort'}: what the 2D student sees (each panel min–max scaled)", width, 9)
    footer_in = FOOTER_LINE_IN * (footer.count("\n") + 1) + 0.1
    title_in = 0.16 * (title.count("\n") + 1) + 0.02
    height = 1.35 * nrows + 0.6 + footer_in + title_in
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, (label, stack) in enumerate(rows):
        for s in range(len(idx)):
            for v, view in enumerate(views):
                ax = axes[r, s * len(views) + v]
                ax.imshow(stack[s, v], cmap=cmap, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ref = f" ({refs[view]})" if view in refs else ""
                    ax.set_title(f"{names[s]}\n{short_label(view + ref)}", fontsize=TITLE_PT)
                if s == 0 and v == 0:
                    ax.set_ylabel(label, fontsize=TITLE_PT)
    fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.01, footer, fontsize=TITLE_PT, ha="left", va="bottom", family="monospace")
    fig.tight_layout(rect=(0, footer_in / height, 1, 1 - title_in / height))
    return fig


def render_gallery(cohort: Cohort, specs: list[ProjectionSpec], n_per_class: int = 2, cmap: str = "gray") -> bytes:
    """PNG bytes of :func:`gallery_figure`."""
    buf = io.BytesIO()
    gallery_figure(cohort, specs, n_per_class, cmap).savefig(buf, format="png")
    return buf.getvalue()


def write_gallery(path: str | Path, cohort: Cohort, specs: list[ProjectionSpec], n_per_class: int = 2, force: bool = True) -> Path:
    """Render :func:`render_gallery` and write it atomically to ``path``."""
    path = Path(path)
    data = render_gallery(cohort, specs, n_per_class)
    with atomic_file(path, force=force, mode="wb") as fh:
        fh.write(data)
    return path
