"""Networks: shapes in 2D/3D, embedding feeds the classifier, multi-view, spec round-trip, errors."""

from __future__ import annotations

import json

import pytest
import torch

from volkd.distill import get_kd_loss
from volkd.errors import ConfigError
from volkd.models import ARCHS, ModelSpec, build_model

SHAPES = {2: (2, 1, 32, 32), 3: (2, 1, 16, 16, 16)}
EMB = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "densenet121": 1024, "lightcnn": 128}


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded convolutions: much faster than oversubscribing the shared 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes_every_arch(arch: str, dims: int) -> None:
    torch.manual_seed(0)
    # DenseNet halves the grid 5 times: a 16³ volume needs a stride-1 stem
    stride = 1 if (arch == "densenet121" and dims == 3) else 2
    model = build_model(ModelSpec(arch=arch, spatial_dims=dims, in_channels=1, num_classes=3, stem_stride=stride))
    logits, emb = model(torch.randn(*SHAPES[dims]))
    assert logits.shape == (2, 3)
    assert emb.shape == (2, EMB[arch]) == (2, model.embedding_dim)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["lightcnn", "resnet18", "densenet121"])
def test_feature_kd_gradient_reaches_classifier_weights(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch=arch, spatial_dims=2, in_channels=1, width=16))  # narrow: fast on CPU
    model.eval()  # deterministic BN so the re-applied classifier sees the same tensor
    logits, emb = model(torch.randn(4, 1, 32, 32))
    # the embedding used for KD is exactly what the classifier consumes
    torch.testing.assert_close(model.classifier(emb), logits, rtol=0, atol=0)
    # a feature-level KD loss (the study's L_fg vs a 512-d teacher) on that embedding trains the
    # encoder weights that produce the logits
    kd, _ = get_kd_loss("graph", w_lg=0.0, w_metric=0.0)(emb, logits, torch.randn(4, 512), torch.randn(4, 2))
    assert kd.item() > 0
    kd.backward()
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    # the classifier's weights are downstream of the embedding: no KD gradient there
    w_grad = model.classifier.weight.grad
    assert w_grad is None or not w_grad.any()
    # and the encoder the KD loss trains is the only encoder: its params are all the model has but the fc
    assert _n_params(model) == _n_params(model.encoder) + _n_params(model.classifier)


@pytest.mark.parametrize("shared", [True, False])
def test_multiview_shapes_and_fusion(shared: bool) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch="lightcnn", spatial_dims=2, in_channels=3, n_views=3, shared_encoder=shared)
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    logits, emb = model(x)
    assert emb.shape == (2, 3 * 128) and model.embedding_dim == 384
    assert logits.shape == (2, 2)
    torch.testing.assert_close(model.classifier(emb), logits, rtol=0, atol=0)
    # view-major concatenation: slot v holds the encoding of view v alone
    enc = model.encoder.encoders[0 if shared else 1]
    torch.testing.assert_close(emb[:, 128:256], enc(x[:, 1]), rtol=1e-5, atol=1e-6)


def test_shared_vs_per_view_parameter_counts() -> None:
    base = dict(arch="lightcnn", spatial_dims=2, in_channels=3, n_views=3, num_classes=2)
    shared = build_model(ModelSpec(**base, shared_encoder=True))
    per_view = build_model(ModelSpec(**base, shared_encoder=False))
    single = build_model(ModelSpec(arch="lightcnn", spatial_dims=2, in_channels=3))
    enc = _n_params(single.encoder)
    fc = 384 * 2 + 2
    assert _n_params(shared) == enc + fc
    assert _n_params(per_view) == 3 * enc + fc
    assert _n_params(per_view) != _n_params(shared)


def test_stem_stride_changes_cost_not_shape() -> None:
    x = torch.randn(1, 1, 16, 16, 16)
    for stride in (1, 2):
        model = build_model(ModelSpec(arch="resnet10", spatial_dims=3, stem_stride=stride, stem_kernel=3))
        assert model.encoder.net.conv1.stride == (stride,) * 3
        assert model.encoder.net.conv1.kernel_size == (3,) * 3
        assert model.eval()(x)[1].shape == (1, 512)


def test_width_sets_embedding_dim() -> None:
    assert build_model(ModelSpec(arch="lightcnn", width=8)).embedding_dim == 64
    assert build_model(ModelSpec(arch="resnet10", width=32)).embedding_dim == 256


def test_spec_round_trip() -> None:
    spec = ModelSpec(arch="resnet18", spatial_dims=3, in_channels=1, num_classes=2, n_views=1, stem_stride=2, width=32)
    d = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(d) == spec
    model = build_model(d)
    assert model.spec == spec


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "vgg16"}, "field 'arch': unknown arch 'vgg16'; choose one of resnet10, resnet18, resnet34, densenet121, lightcnn"),
        ({"in_channels": 0}, "field 'in_channels': must be ≥ 1, got 0"),
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3, got 4"),
        ({"num_classes": 1}, "field 'num_classes': must be ≥ 2 (a classifier needs two classes at least), got 1"),
        ({"stem_kernel": 4}, "stem_kernel must be odd"),
        ({"colour": "red"}, "unknown field 'colour'; allowed fields: arch, spatial_dims, in_channels"),
    ],
)
def test_bad_spec_raises_config_error(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid model spec") as info:
        ModelSpec(**fields)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match="invalid model spec"):
        ModelSpec.from_dict(fields)
    with pytest.raises(ConfigError, match="invalid model spec"):
        ModelSpec.model_validate(fields)


def test_wrong_input_channels_raise_config_error() -> None:
    model = build_model(ModelSpec(arch="lightcnn", spatial_dims=2, in_channels=3))
    with pytest.raises(ConfigError, match=r"shape \(2, 1, 32, 32\).*expects \(B, C=3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))
    mv = build_model(ModelSpec(arch="lightcnn", spatial_dims=2, in_channels=3, n_views=3))
    with pytest.raises(ConfigError, match=r"expects \(B, V=3, C=3, H, W\)"):
        mv(torch.randn(2, 3, 32, 32))
