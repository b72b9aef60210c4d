"""ModelSpec: the serialisable description of a network (stored in every checkpoint)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from volkd.errors import ConfigError, at_least, describe_validation_error, one_of

ARCHS: tuple[str, ...] = ("resnet10", "resnet18", "resnet34", "densenet121", "lightcnn")
DEFAULT_WIDTH: dict[str, int] = {"resnet10": 64, "resnet18": 64, "resnet34": 64, "densenet121": 64, "lightcnn": 16}


class ModelSpec(BaseModel):
    """What `build_model` needs: architecture, 2D/3D, channels, classes, views and stem/width.

    ``width`` is the channel count of the first stage (ResNet: 64 × widen factor; DenseNet:
    ``init_features``; light CNN: first block, doubling per block); ``None`` means the arch's
    default. ``stem_stride``/``stem_kernel`` set the first convolution (MONAI's 3D ResNet default
    7³ stride 1 costs 8× a stride-2 stem, so stride 2 is our CPU-friendly default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "lightcnn"
    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    n_views: int = 1
    shared_encoder: bool = True
    stem_stride: int = 2
    stem_kernel: int = 7
    width: int | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _as_config_error(cls, data: Any, handler: Any) -> "ModelSpec":
        """Turn pydantic's ValidationError into a one-line ConfigError (constructor and model_validate)."""
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid model spec: {describe_validation_error(exc, cls)}") from None

    _arch_known = field_validator("arch")(one_of("arch", ARCHS))

    @field_validator("spatial_dims")
    @classmethod
    def _dims(cls, v: int) -> int:
        if v not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {v}")
        return v

    @field_validator("stem_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v < 1 or v % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and ≥ 1 (same padding), got {v}")
        return v

    _positive = field_validator("in_channels", "n_views", "stem_stride")(at_least(1))
    _classes = field_validator("num_classes")(at_least(2, " (a classifier needs two classes at least)"))
    _width = field_validator("width")(at_least(4, " channels (or null for the arch default)"))

    @property
    def base_width(self) -> int:
        """The first-stage channel count actually used (``width`` or the arch default)."""
        return self.width if self.width is not None else DEFAULT_WIDTH[self.arch]

    @property
    def multiview(self) -> bool:
        """True when the model takes ``(B, V, C, *spatial)`` input (``n_views > 1``)."""
        return self.n_views > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (what checkpoints store)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Rebuild from `to_dict` output; bad fields raise `ConfigError` naming them."""
        if not isinstance(d, dict):
            raise ConfigError(f"model spec must be a mapping, got {type(d).__name__}")
        return cls(**d)

