"""ProjectionSpec: which projection, on which views, fused how — validated and serialisable."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from volkd.data.cohort import VIEW_AXIS
from volkd.errors import ConfigError, at_least, describe_validation_error, one_of
from volkd.projection.methods import METHODS

VIEWS = ("axial", "coronal", "sagittal")
FUSIONS = ("none", "early", "joint")
MASK_MODES = ("crop", "zero")
REF_SOURCES = ("explicit", "atlas", "mean_image")

#: Presets by name: each method alone (axial view), early / joint fusion of three views, FuseMe.
PRESETS: dict[str, dict[str, Any]] = {
    **{m: {"method": m, "views": ["axial"], "fusion": "none"} for m in ("slice", "slices", "mip", "mean", "std", "entropy", "dynamic")},
    "early": {"method": "slice", "views": list(VIEWS), "fusion": "early"},
    "joint": {"method": "slice", "views": list(VIEWS), "fusion": "joint"},
    "fuseme": {"method": "slices", "epsilon": 1, "views": list(VIEWS), "fusion": "joint"},
}


class ProjectionSpec(BaseModel):
    """A projection: ``method`` on ``views``, fused by ``fusion``; JSON round-trips exactly.

    Invalid values raise :class:`volkd.errors.ConfigError`. Grid-dependent checks (ε and
    reference indices against the grid) run at construction when ``grid_shape`` is set
    (``resolve_reference`` sets it) and always in :func:`volkd.projection.project`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "slice"
    views: list[str] = ["axial"]
    fusion: str = "none"
    epsilon: int = 1
    ref_index: dict[str, int] | None = None
    dynamic_minmax: bool = True
    out_size: tuple[int, int] | None = None
    mask_striatum: bool = False
    mask_mode: str = "crop"
    crop_margin: int = 2
    crop_box: dict[str, tuple[int, int, int, int]] | None = None  # view → (row0, row1, col0, col1), half-open
    grid_shape: tuple[int, int, int] | None = None
    ref_source: str | None = None
    name: str | None = None

    # ------------------------------------------------------------------ validation
    @model_validator(mode="wrap")
    @classmethod
    def _as_config_error(cls, data: Any, handler: Any) -> "ProjectionSpec":
        try:
            spec = handler(data)
        except ValidationError as e:
            raise ConfigError(f"invalid projection spec: {describe_validation_error(e, cls)}") from None
        spec._check_consistent()
        return spec

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            presets = sorted(set(PRESETS) - set(METHODS))
            hint = f"; {v!r} is a preset: use preset({v!r})" if v in PRESETS else ""
            raise ValueError(f"unknown method {v!r}; choose one of {sorted(METHODS)} (presets: {presets}){hint}")
        return v

    @field_validator("views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"no views given; choose one or more of {list(VIEWS)}")
        bad = [x for x in v if x not in VIEW_AXIS]
        if bad:
            raise ValueError(f"unknown view(s) {bad}; choose from {list(VIEWS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated view in {v}; list each view once")
        return list(v)

    _fusion = field_validator("fusion")(one_of("fusion", FUSIONS))
    _mask_mode = field_validator("mask_mode")(one_of("mask_mode", MASK_MODES))
    _ref_source = field_validator("ref_source")(one_of("ref_source", REF_SOURCES))
    _non_negative = field_validator("epsilon", "crop_margin")(at_least(0))

    @field_validator("out_size")
    @classmethod
    def _out_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"must be two positive sizes (height, width), got {v}")
        return v

    @field_validator("grid_shape")
    @classmethod
    def _grid(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"must be three positive sizes, got {v}")
        return v

    @field_validator("ref_index")
    @classmethod
    def _ref_index(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        bad = [k for k in v if k not in VIEW_AXIS]
        if bad:
            raise ValueError(f"unknown view(s) {bad}; keys must be among {list(VIEWS)}")
        neg = {k: i for k, i in v.items() if i < 0}
        if neg:
            raise ValueError(f"slice indices must be ≥ 0, got {neg}")
        return dict(v)

    @field_validator("crop_box")
    @classmethod
    def _crop_box(cls, v: dict[str, tuple[int, int, int, int]] | None) -> dict[str, tuple[int, int, int, int]] | None:
        if v is None:
            return v
        for k, (r0, r1, c0, c1) in v.items():
            if k not in VIEW_AXIS:
                raise ValueError(f"unknown view {k!r}; keys must be among {list(VIEWS)}")
            if not (0 <= r0 < r1 and 0 <= c0 < c1):
                raise ValueError(f"box for {k!r} must be (row0, row1, col0, col1) with 0 ≤ row0 < row1 and 0 ≤ col0 < col1, got {(r0, r1, c0, c1)}")
        return v

    def _check_consistent(self) -> None:
        n = len(self.views)
        if self.fusion == "none" and n != 1:
            raise ConfigError(f"ProjectionSpec.views: fusion='none' takes exactly one view, got {n} {self.views}; use fusion='early' (views stacked as channels) or 'joint' (one input per view)")
        if self.fusion in ("early", "joint") and n < 2:
            raise ConfigError(f"ProjectionSpec.views: fusion={self.fusion!r} needs at least two views, got {self.views}; use fusion='none' for a single view")
        if self.grid_shape is not None:
            self.validate_for(self.grid_shape, require_reference=False)

    def validate_for(self, grid_shape: tuple[int, ...], require_reference: bool = True) -> None:
        """Check the spec against a volume grid (ε, reference indices, crop boxes); raise ConfigError."""
        grid = tuple(int(g) for g in grid_shape)
        if len(grid) != 3:
            raise ConfigError(f"ProjectionSpec: volumes must be 3-D (D×H×W), got a grid of {grid}")
        method = METHODS[self.method]
        for view in self.views:
            length = grid[VIEW_AXIS[view]]
            if self.method == "slices" and 2 * self.epsilon + 1 > length:
                raise ConfigError(
                    f"ProjectionSpec.epsilon: ε={self.epsilon} needs {2 * self.epsilon + 1} slices but the {view} axis of "
                    f"grid {grid} has {length}; use ε ≤ {(length - 1) // 2}"
                )
            ref = (self.ref_index or {}).get(view)
            if method.needs_reference and ref is None and require_reference:
                raise ConfigError(
                    f"ProjectionSpec.ref_index: no reference slice for the {view} view (method {self.method!r}); "
                    "call volkd.projection.resolve_reference(spec, cohort) or set ref_index explicitly"
                )
            if ref is not None and method.needs_reference:
                eps = self.epsilon if self.method == "slices" else 0
                if ref - eps < 0 or ref + eps > length - 1:
                    what = f"slices {ref - eps}…{ref + eps}" if eps else f"slice {ref}"
                    raise ConfigError(
                        f"ProjectionSpec.ref_index[{view!r}]={ref}: {what} out of range; the {view} axis of grid "
                        f"{grid} has slices 0…{length - 1}" + (f" (with ε={eps}, use {eps}…{length - 1 - eps})" if eps else "")
                    )
        if self.mask_striatum:
            boxes = self.crop_box or {}
            for view in self.views:
                if view not in boxes:
                    if require_reference:
                        raise ConfigError(
                            f"ProjectionSpec.crop_box: no striatum box for the {view} view (mask_striatum=True); "
                            "call volkd.projection.resolve_reference(spec, cohort) to compute it"
                        )
                    continue
                h, w = image_shape(grid, view)
                r0, r1, c0, c1 = boxes[view]
                if r1 > h or c1 > w:
                    raise ConfigError(f"ProjectionSpec.crop_box[{view!r}]={boxes[view]} exceeds the {view} image size {(h, w)}")

    # ------------------------------------------------------------------ shape info
    @property
    def channels_per_view(self) -> int:
        """Channels of one view's image (2ε+1 for ``slices``, else 1)."""
        return METHODS[self.method].channels(self.epsilon)

    @property
    def multiview(self) -> bool:
        """True when outputs are (N, V, C, H, W): one input per view (joint fusion)."""
        return self.fusion == "joint"

    @property
    def n_views(self) -> int:
        """Separate view inputs the model receives (``ModelSpec.n_views``): V for joint fusion, else 1."""
        return len(self.views) if self.multiview else 1

    @property
    def in_channels(self) -> int:
        """Channels of the model's input image: V·C for early fusion, else C (per view)."""
        c = self.channels_per_view
        return c * len(self.views) if self.fusion == "early" else c

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``fuseme`` or ``mip-axial``."""
        if self.name:
            return self.name
        return f"{self.method}-{'+'.join(self.views)}" + (f"-{self.fusion}" if self.fusion != "none" else "")

    def image_sizes(self, grid_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
        """Each view's image size (rows, cols) before resizing (after cropping when masked)."""
        out = {}
        for view in self.views:
            h, w = image_shape(grid_shape, view)
            if self.mask_striatum and self.mask_mode == "crop" and self.crop_box and view in self.crop_box:
                r0, r1, c0, c1 = self.crop_box[view]
                h, w = r1 - r0, c1 - c0
            out[view] = (h, w)
        return out

    def target_size(self, grid_shape: tuple[int, ...]) -> tuple[int, int]:
        """Output image size: ``out_size``, else the largest rows/cols over the views."""
        if self.out_size is not None:
            return (int(self.out_size[0]), int(self.out_size[1]))
        sizes = list(self.image_sizes(grid_shape).values())
        return (max(s[0] for s in sizes), max(s[1] for s in sizes))

    def output_shape(self, grid_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one scan's output: (C, H, W) or (V, C, H, W) for joint fusion."""
        h, w = self.target_size(grid_shape)
        if self.multiview:
            return (len(self.views), self.channels_per_view, h, w)
        return (self.in_channels, h, w)

    def replace(self, **changes: Any) -> "ProjectionSpec":
        """A validated copy with ``changes`` applied."""
        return ProjectionSpec(**{**self.model_dump(), **changes})


def image_shape(grid_shape: tuple[int, ...], view: str) -> tuple[int, int]:
    """Displayed (rows, cols) of ``view`` on ``grid_shape``: rows = the later remaining axis."""
    rest = [int(g) for i, g in enumerate(grid_shape) if i != VIEW_AXIS[view]]
    return (rest[1], rest[0])


def preset(name: str, **overrides: Any) -> ProjectionSpec:
    """The preset ``name`` (``fuseme``, ``early``, ``joint`` or a method name), with ``overrides``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown projection preset {name!r}; choose one of {sorted(PRESETS)}")
    base = {**PRESETS[name]}
    default = {k: ProjectionSpec.model_fields[k].default for k in ("method", "views", "fusion")}
    changed = {k for k in ("method", "views", "fusion") if k in overrides and overrides[k] != base.get(k, default[k])}
    label: str | None = name
    if changed == {"method"} and name in ("early", "joint"):
        label = f"{name}-{overrides['method']}"
    elif changed:
        label = None  # no longer the named preset: labelled by its fields
    fields = {**base, "name": label, **overrides}
    return ProjectionSpec(**fields)

