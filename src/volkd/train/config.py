"""TrainConfig: every knob of the training loop, serialisable and validated."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from volkd.errors import ConfigError, describe_validation_error

#: Accepted ``device`` values.
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Validation metrics the loop can monitor; ``val_loss`` is minimised, the others maximised.
MONITORS = ("val_loss", "val_balanced_accuracy", "val_auc", "val_accuracy")


class AugmentConfig(BaseModel):
    """Training-time augmentation (OFF by default). No left-right flip: asymmetry is diagnostic."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    rotate_deg: float = Field(5.0, ge=0, le=45, description="max |rotation| per axis, degrees")
    translate_frac: float = Field(0.04, ge=0, le=0.5, description="max |shift| as a fraction of the field of view")
    scale_frac: float = Field(0.05, ge=0, le=0.5, description="max |zoom - 1|")
    intensity_scale: float = Field(0.1, ge=0, le=1, description="multiply by U(1-s, 1+s)")
    intensity_shift: float = Field(0.1, ge=0, le=1, description="add U(-s, s) (normalised units)")
    noise_std: float = Field(0.02, ge=0, le=1, description="additive Gaussian noise sd (normalised units)")
    flip_lr: bool = Field(False, description="random left-right flip; changes asymmetry, keep off for DaTscan")


class TrainConfig(BaseModel):
    """Hyper-parameters and options of one training run (teacher or student)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=2, description="GLOBAL batch size (split across ranks under DDP)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["radam", "adam", "adamw"] = "radam"
    scheduler: Literal["cosine_warm_restarts", "cosine", "none"] = "cosine_warm_restarts"
    t0: int = Field(10, ge=1, description="first restart period in EPOCHS (cosine_warm_restarts)")
    t_mult: int = Field(2, ge=1, description="period multiplier after each restart")
    eta_min: float = Field(0.0, ge=0)
    patience: int = Field(20, ge=1, description="epochs without improvement of `monitor` before stopping")
    min_delta: float = Field(0.0, ge=0)
    monitor: Literal["val_loss", "val_balanced_accuracy", "val_auc", "val_accuracy"] = "val_loss"
    class_weighting: Literal["inverse_frequency", "sampler", "none"] = "inverse_frequency"
    seed: int = 0
    deterministic: bool = True
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    w_cls: float = Field(1.0, ge=0)
    w_kd: float = Field(5.0, ge=0, description="weight of the KD loss's main terms (graph: L_fg + L_lg)")
    normalizer: str = "zscore"
    eval_batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    channels_last: bool = Field(
        True, description="weights in channels-last memory format (NHWC / NDHWC): 5–22 % less CPU per step; float rounding differs from NCHW")
    precision: Literal["fp32", "amp"] = Field(
        "fp32", description="amp: mixed precision on CUDA (bf16, or fp16 with loss scaling); a no-op (fp32) on the CPU")
    save_test_predictions: bool = True
    teacher_cache_dir: str | None = Field(None, description="share teacher caches across runs (keyed by teacher hash + cohort)")
    progress: bool = True
    tensorboard: bool = Field(False, description="also log scalars to <out>/tensorboard (skipped if tensorboard is not installed)")

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError(f"device {v!r} unknown; use auto (CUDA when present), cpu, cuda or cuda:N")
        return v

    @property
    def monitor_mode(self) -> str:
        """``min`` for losses, ``max`` for scores."""
        return "min" if self.monitor == "val_loss" else "max"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "train config") -> "TrainConfig":
        """Validate a dict; a bad field raises :class:`ConfigError` naming it."""
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise ConfigError(f"{where}: {describe_validation_error(e, cls)}") from None
