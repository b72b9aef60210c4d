"""Loop mechanics on tiny modules: early stopping, class weights, per-epoch schedule,
determinism, augmentation, batch order, KD gradient, sharding helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from volkd.distill import get_kd_loss
from volkd.errors import ConfigError
from volkd.train.config import AugmentConfig, TrainConfig
from volkd.train.data import ArrayData, apply_augment, class_weights, epoch_order, global_batches, sample_augment_params, seeded_generator
from volkd.train.distributed import DistContext, shard, shard_sizes
from volkd.train.loop import Loop, TeacherOutputs, classification_summary


class Tiny(nn.Module):
    """(B, 1, 4, 4) → (logits, embedding); no batch-dependent layers."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh())
        self.cls = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.enc(x)
        return self.cls(e), e


def _data(n: int = 20, seed: int = 0) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 3 != 0).long()
    x = torch.randn(n, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1).float()
    return ArrayData(x, y, torch.arange(n))


META = {"kind": "teacher", "model_spec": {}, "projection_spec": None, "normalizer": {"name": "none"}, "class_names": ["a", "b"],
        "config": {}, "seed": 0, "versions": {}, "cohort_fingerprint": "x", "split": {}, "train_subjects": [], "teacher_hash": None}


def _loop(tmp_path, cfg: TrainConfig, model: nn.Module | None = None, **kw) -> Loop:
    torch.manual_seed(cfg.seed)
    model = model or Tiny()
    tr = _data(20)
    meta = {**META, "config": cfg.model_dump(mode="json")}
    return Loop(model, tr, _data(8, seed=1), cfg, tmp_path, meta, spatial_dims=2, **kw)


def test_early_stopping_stops_at_patience(tmp_path):
    cfg = TrainConfig(epochs=10, batch_size=8, lr=1e-12, patience=2, min_delta=1e-3, progress=False)
    res = _loop(tmp_path, cfg).run()
    assert res.stopped_early and res.best_epoch == 0
    assert [r["epoch"] for r in res.history] == [0, 1, 2]
    assert [r["best"] for r in res.history] == [True, False, False]
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4  # header + 3


def test_monitor_max_mode(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, monitor="val_balanced_accuracy", progress=False)
    assert cfg.monitor_mode == "max" and TrainConfig().monitor_mode == "min"
    res = _loop(tmp_path, cfg).run()
    bacc = [r["val_balanced_accuracy"] for r in res.history]
    assert res.best_metric == max(bacc) and res.best_epoch == bacc.index(max(bacc))


def test_class_weights_values():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0]))
    assert float((w[torch.tensor([0, 0, 0, 1])]).mean()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"class index\(es\) \[2\] have no training scan"):
        class_weights(np.array([0, 1, 1]), 3)


def test_weighted_ce_is_the_training_loss(tmp_path):
    """With one full batch and a vanishing LR, the logged train CE is the class-weighted CE."""
    cfg = TrainConfig(epochs=1, batch_size=20, lr=1e-12, progress=False)
    tr = _data(20)
    w = class_weights(tr.y.numpy(), 2)
    loop = _loop(tmp_path, cfg, class_weight=w)
    with torch.no_grad():
        expected = float(F.cross_entropy(loop.model(tr.x)[0], tr.y, weight=w))
        unweighted = float(F.cross_entropy(loop.model(tr.x)[0], tr.y))
    row = loop.run().history[0]
    assert row["train_ce"] == pytest.approx(expected, rel=1e-5)
    assert abs(row["train_ce"] - unweighted) > 1e-4


def test_scheduler_steps_per_epoch_with_warm_restarts(tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=4, lr=0.1, t0=2, t_mult=2, patience=50, progress=False)
    lrs = [r["lr"] for r in _loop(tmp_path, cfg).run().history]  # 20 scans → 5 batches per epoch
    expected = [0.1, 0.05, 0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05, 0.1 * (1 + math.cos(3 * math.pi / 4)) / 2]
    assert lrs == pytest.approx(expected)


def test_deterministic_same_seed_same_result(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=6, seed=3, progress=False, augment=AugmentConfig(enabled=True))
    a = _loop(tmp_path / "a", cfg).run()
    b = _loop(tmp_path / "b", cfg).run()
    c = _loop(tmp_path / "c", cfg.model_copy(update={"seed": 4})).run()
    assert a.history == b.history
    assert a.history != c.history
    wa, wb = (torch.load(p / "last.pt", weights_only=True)["state_dict"] for p in (tmp_path / "a", tmp_path / "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kd_gradient_reaches_the_student(tmp_path):
    """Only KD drives learning (w_cls = 0): weights move with graph KD, stay put without it."""
    cfg = TrainConfig(epochs=1, batch_size=10, w_cls=0.0, w_kd=5.0, progress=False)
    g = torch.Generator().manual_seed(5)
    teacher = TeacherOutputs(torch.randn(20, 9, generator=g), torch.randn(20, 2, generator=g))
    kd_loop = _loop(tmp_path / "kd", cfg, kd=get_kd_loss("graph"), teacher=teacher)
    before = {k: v.clone() for k, v in kd_loop.model.state_dict().items()}
    row = kd_loop.run().history[0]
    after = kd_loop.model.state_dict()
    assert row["train_kd"] > 0 and row["train_ce"] > 0 and row["train_loss"] == pytest.approx(5.0 * row["train_kd"])
    assert {"train_kd_fg", "train_kd_lg", "train_kd_metric"} <= set(row)
    assert not torch.equal(before["enc.1.weight"], after["enc.1.weight"])
    assert not torch.equal(before["cls.weight"], after["cls.weight"])  # L_lg reaches the classifier
    plain = _loop(tmp_path / "plain", cfg)
    before = {k: v.clone() for k, v in plain.model.state_dict().items()}
    plain.run()
    assert all(torch.equal(before[k], v) for k, v in plain.model.state_dict().items())


def test_kd_without_teacher_refused(tmp_path):
    with pytest.raises(ConfigError, match="teacher's cached outputs"):
        _loop(tmp_path, TrainConfig(epochs=1, progress=False), kd=get_kd_loss("graph")).run()


def test_kd_uses_the_batch_scans_teacher_rows(tmp_path):
    """The loss receives exactly the teacher rows of the scans in the batch."""
    seen = []

    def spy(se, sl, te, tl):
        seen.append((te[:, 0].long().tolist(), tl.shape))
        return (se * 0).sum(), {}

    cfg = TrainConfig(epochs=1, batch_size=6, progress=False)
    teacher = TeacherOutputs(torch.arange(40).float().view(-1, 1).repeat(1, 3), torch.zeros(40, 2))
    loop = _loop(tmp_path, cfg, kd=spy, teacher=teacher)
    loop.train = ArrayData(loop.train.x, loop.train.y, loop.train.index + 20)  # scans 20..39 of the cohort
    loop.run()
    order = epoch_order(loop.train.y, cfg.seed, 0)
    expected = [[int(i) + 20 for i in b] for b in global_batches(order, 6)]
    assert [s[0] for s in seen] == expected


def test_epoch_order_and_batches():
    y = torch.tensor([0] * 18 + [1] * 2)
    a, b = epoch_order(y, 0, 3), epoch_order(y, 0, 3)
    assert torch.equal(a, b) and not torch.equal(a, epoch_order(y, 0, 4))
    assert sorted(a.tolist()) == list(range(20))
    draws = torch.cat([epoch_order(y, 0, e, balanced_sampler=True) for e in range(20)])
    frac_minority = float((y[draws] == 1).float().mean())
    assert 0.4 < frac_minority < 0.6
    sizes = [len(b) for b in global_batches(torch.arange(13), 4)]
    assert sizes == [4, 4, 4]  # a trailing single scan is dropped
    assert [len(b) for b in global_batches(torch.arange(14), 4)] == [4, 4, 4, 2]


def test_augmentation_identity_flip_and_reproducibility():
    x = torch.randn(3, 1, 6, 5, 4)
    zero = AugmentConfig(enabled=True, rotate_deg=0, translate_frac=0, scale_frac=0, intensity_scale=0, intensity_shift=0, noise_std=0)
    p = sample_augment_params(3, 3, zero, seeded_generator(0))
    assert not p["flip"].any()
    assert torch.allclose(apply_augment(x, p, 3), x, atol=1e-5)
    p = sample_augment_params(3, 3, zero.model_copy(update={"flip_lr": True}), seeded_generator(1))
    out = apply_augment(x, p, 3)
    for i in range(3):  # L-R = volume axis 0 = tensor dim 2
        assert torch.allclose(out[i], x[i].flip(1) if p["flip"][i] else x[i], atol=1e-5)
    default = AugmentConfig()
    assert not default.enabled and not default.flip_lr
    q1 = sample_augment_params(3, 3, default, seeded_generator(7))
    q2 = sample_augment_params(3, 3, default, seeded_generator(7))
    a1, a2 = apply_augment(x, q1, 3), apply_augment(x, q2, 3)
    assert torch.equal(a1, a2) and not torch.allclose(a1, x, atol=1e-3)
    mv = torch.randn(2, 3, 1, 8, 8)  # multi-view 2D
    assert apply_augment(mv, sample_augment_params(2, 2, default, seeded_generator(2)), 2).shape == mv.shape


def test_sharding_helpers():
    assert shard_sizes(5, 2) == [3, 2] and shard_sizes(4, 4) == [1, 1, 1, 1]
    gb = torch.arange(10, 15)
    assert shard(gb, DistContext(0, 2)).tolist() == [10, 11, 12]
    assert shard(gb, DistContext(1, 2)).tolist() == [13, 14]
    assert torch.equal(shard(gb, DistContext()), gb)


def test_classification_summary_values():
    y = torch.tensor([0, 0, 1, 1])
    p = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    s = classification_summary(y, p)
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == 0.75 and s["auc"] == 1.0
    assert s["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.8])), rel=1e-6)
    assert math.isnan(classification_summary(torch.tensor([1, 1]), p[:2])["auc"])


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="field 'optimizer'"):
        TrainConfig.from_dict({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="field 'augment.rotate_deg'"):
        TrainConfig.from_dict({"augment": {"rotate_deg": 90}})


def test_tensorboard_optional(tmp_path):
    """TensorBoard logging is skipped with a warning when the package is missing."""
    cfg = TrainConfig(epochs=1, batch_size=8, tensorboard=True, progress=False)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard is not installed"):
            res = _loop(tmp_path, cfg).run()
        assert len(res.history) == 1 and not (tmp_path / "tensorboard").exists()
    else:
        _loop(tmp_path, cfg).run()
        assert any((tmp_path / "tensorboard").iterdir())
