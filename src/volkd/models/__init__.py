"""volkd.models: MONAI backbones (2D/3D), multi-view fusion; every model returns (logits, embedding)."""

from volkd.models.backbones import DenseNetEncoder, LightCNNEncoder, ResNetEncoder, build_encoder
from volkd.models.build import VolkdModel, build_model
from volkd.models.multiview import MultiViewEncoder
from volkd.models.spec import ARCHS, ModelSpec

__all__ = [
    "ARCHS",
    "DenseNetEncoder",
    "LightCNNEncoder",
    "ModelSpec",
    "MultiViewEncoder",
    "ResNetEncoder",
    "VolkdModel",
    "build_encoder",
    "build_model",
]
