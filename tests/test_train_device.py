"""device/precision on a CPU machine: auto = cpu, amp = no-op, resumable changes, clear errors;
relational KD batches below min_batch; multi-view augmentation and per-sample noise."""

from __future__ import annotations

import pytest
import torch

from tests.test_train_loop import _data, _loop
from volkd.distill import get_kd_loss
from volkd.distill.losses import GraphKD
from volkd.errors import ConfigError
from volkd.train.checkpoint import load_checkpoint, save_checkpoint
from volkd.train.config import AugmentConfig, TrainConfig
from volkd.train.data import ArrayData, apply_augment, sample_augment_params, sample_noise, seeded_generator
from volkd.train.device import place_inputs, resolve_device, resolve_precision
from volkd.train.loop import TeacherOutputs

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


class Stop(Exception):
    pass


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def _same(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@needs_no_cuda
def test_auto_is_cpu_and_amp_is_a_noop_on_cpu(tmp_path):
    assert TrainConfig().device == "auto" and TrainConfig().precision == "fp32"
    assert resolve_device("auto") == torch.device("cpu")
    p = resolve_precision("amp", torch.device("cpu"))
    assert p.name == "fp32" and p.dtype is None and p.scaler() is None
    base = TrainConfig(epochs=2, batch_size=6, progress=False, augment=AugmentConfig(enabled=True), device="cpu")
    runs = {}
    for name, upd in {"cpu": {}, "auto": {"device": "auto"}, "amp": {"device": "auto", "precision": "amp"}}.items():
        runs[name] = _loop(tmp_path / name, base.model_copy(update=upd)).run()
    assert runs["cpu"].history == runs["auto"].history == runs["amp"].history
    assert _same(tmp_path / "cpu" / "last.pt", tmp_path / "auto" / "last.pt")
    assert _same(tmp_path / "cpu" / "last.pt", tmp_path / "amp" / "last.pt")
    runtime = load_checkpoint(tmp_path / "amp" / "last.pt").extra["runtime"]
    assert runtime["device"] == "cpu" and runtime["precision"] == "fp32" and runtime["torch_threads"] >= 1


def test_device_names_are_checked():
    with pytest.raises(ConfigError, match="field 'device'.*use auto"):
        TrainConfig.from_dict({"device": "gpu0"})
    with pytest.raises(ConfigError, match="field 'precision'"):
        TrainConfig.from_dict({"precision": "fp8"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available on this machine.*use device: auto or cpu"):
            resolve_device("cuda:1")
    x = torch.randn(3, 2)
    assert place_inputs(x, torch.device("cpu")) is x  # the CPU keeps the tensor as it is


def test_device_and_precision_may_change_on_resume(tmp_path):
    """A run started with device: cpu resumes with device: auto / precision: amp (here: the CPU
    both times, so bit-identical to the uninterrupted run)."""
    cfg = TrainConfig(epochs=3, batch_size=6, progress=False, device="cpu", augment=AugmentConfig(enabled=True))
    straight = _loop(tmp_path / "a", cfg).run()

    def stop(epoch, row):
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        _loop(tmp_path / "b", cfg, on_epoch_end=stop).run()
    resumed = _loop(tmp_path / "b", cfg.model_copy(update={"device": "auto", "precision": "amp"})).run(resume=True)
    assert resumed.history == straight.history
    assert _same(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")


def _edit_config(path, **changes) -> None:
    """Rewrite the training config stored in checkpoint ``path`` (None = drop the field)."""
    from volkd.train.checkpoint import decode

    raw = torch.load(path, weights_only=True)
    payload = {k: (v if k == "state_dict" else decode(v)) for k, v in raw.items() if k not in ("format", "format_version")}
    config = {**payload["config"], **changes}
    payload["config"] = {k: v for k, v in config.items() if v is not None}
    save_checkpoint(path, payload)


def test_resume_of_a_checkpoint_written_before_a_config_field_existed(tmp_path):
    """A field added later (e.g. precision) counts as its default in an older checkpoint's config;
    a real change is still refused."""
    cfg = TrainConfig(epochs=2, batch_size=6, progress=False)

    def stop(epoch, row):
        raise Stop

    for d in ("old", "changed"):
        with pytest.raises(Stop):
            _loop(tmp_path / d, cfg, on_epoch_end=stop).run()
    _edit_config(tmp_path / "old" / "last.pt", precision=None)
    assert "precision" not in load_checkpoint(tmp_path / "old" / "last.pt").config
    assert len(_loop(tmp_path / "old", cfg).run(resume=True).history) == 2
    _edit_config(tmp_path / "changed" / "last.pt", deterministic=False)
    with pytest.raises(ConfigError, match=r"changed: deterministic"):
        _loop(tmp_path / "changed", cfg).run(resume=True)


# ------------------------------------------------------------------ relational batches
class RecordingGraphKD(GraphKD):
    """Graph KD that records the batch size and value of every KD term it computes."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls: list[tuple[int, float]] = []

    def compute(self, se, sl, te, tl):
        total, parts = super().compute(se, sl, te, tl)
        self.calls.append((se.shape[0], float(total.detach())))
        return total, parts


def test_trailing_batch_below_min_batch_gets_no_kd_term(tmp_path):
    """19 scans, batch 8 → 8, 8, 3: the batch of 3 trains on CE only; train_kd is the mean over
    the 16 scans that had a KD term; train_loss is the mean objective over all 19."""
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-12, progress=False)
    g = torch.Generator().manual_seed(5)
    teacher = TeacherOutputs(torch.randn(19, 5, generator=g), torch.randn(19, 2, generator=g))
    kd = RecordingGraphKD()  # min_batch 8
    loop = _loop(tmp_path, cfg, kd=kd, teacher=teacher)
    loop.train = _data(19)
    row = loop.run().history[0]
    assert [n for n, _ in kd.calls] == [8, 8]
    (_, k1), (_, k2) = kd.calls
    assert row["train_kd_scans"] == 16.0
    assert row["train_kd"] == pytest.approx((8 * k1 + 8 * k2) / 16, rel=1e-12)
    assert row["train_loss"] == pytest.approx(row["train_ce"] + 5.0 * (8 * k1 + 8 * k2) / 19, rel=1e-12)
    # min_batch 2: the trailing 3 is taught too
    kd2 = RecordingGraphKD(min_batch=2)
    loop = _loop(tmp_path / "b", cfg, kd=kd2, teacher=teacher)
    loop.train = _data(19)
    assert loop.run().history[0]["train_kd_scans"] == 19.0 and [n for n, _ in kd2.calls] == [8, 8, 3]


def test_an_epoch_without_any_kd_batch_reports_it(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=6, progress=False)
    teacher = TeacherOutputs(torch.randn(20, 5), torch.randn(20, 2))
    row = _loop(tmp_path, cfg, kd=get_kd_loss("graph"), teacher=teacher).run().history[0]  # batches of 6 < 8
    assert row["train_kd_scans"] == 0.0 and row["train_kd"] == 0.0
    assert row["train_loss"] == pytest.approx(row["train_ce"])


def test_knn_graph_kd_moves_the_student(tmp_path):
    """affinity=knn used to train a no-KD student (zero gradient): with w_cls = 0 the weights must move."""
    cfg = TrainConfig(epochs=1, batch_size=10, w_cls=0.0, progress=False)
    teacher = TeacherOutputs(torch.randn(20, 9, generator=torch.Generator().manual_seed(1)), torch.randn(20, 2))
    loop = _loop(tmp_path, cfg, kd=get_kd_loss("graph", affinity="knn", k=3), teacher=teacher)
    before = {k: v.clone() for k, v in loop.model.state_dict().items()}
    row = loop.run().history[0]
    assert row["train_kd_fg"] > 0
    assert not torch.equal(before["enc.1.weight"], loop.model.state_dict()["enc.1.weight"])


# ------------------------------------------------------------------ augmentation
def test_multiview_augmentation_equals_per_view_augmentation():
    """Every view of a sample gets the sample's transform and noise, exactly as if each view were augmented alone."""
    cfg = AugmentConfig(enabled=True, flip_lr=True)
    x = torch.randn(4, 3, 2, 12, 10)
    p = sample_augment_params(4, 2, cfg, seeded_generator(3))
    both = apply_augment(x, p, 2)
    for v in range(3):
        assert torch.equal(both[:, v], apply_augment(x[:, v].contiguous(), p, 2))
    assert not torch.allclose(both, x, atol=1e-3)


def test_noise_depends_only_on_the_sample_seed():
    seeds = torch.tensor([11, 22, 33])
    a = sample_noise(seeds, (2, 5))
    b = sample_noise(seeds[1:], (2, 5))
    assert torch.equal(a[1:], b)
    assert torch.equal(a[0], torch.randn((2, 5), generator=torch.Generator().manual_seed(11)))
    assert not torch.equal(a[0], a[1])


def test_channels_last_is_the_same_training_up_to_rounding(tmp_path):
    from volkd.models import ModelSpec, build_model
    from volkd.train.loop import Loop

    spec = ModelSpec(arch="lightcnn", spatial_dims=2, in_channels=2, num_classes=2, width=4)
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(16) % 2).long()
    data = ArrayData(torch.randn(16, 2, 16, 16, generator=g) + y.view(-1, 1, 1, 1), y, torch.arange(16))
    runs = {}
    for cl in (True, False):
        cfg = TrainConfig(epochs=2, batch_size=8, progress=False, channels_last=cl)
        torch.manual_seed(0)
        loop = Loop(build_model(spec), data, data, cfg, tmp_path / str(cl), {"kind": "student", "model_spec": {},
                    "projection_spec": None, "normalizer": {"name": "none"}, "class_names": ["a", "b"],
                    "config": cfg.model_dump(mode="json"), "seed": 0, "versions": {}, "cohort_fingerprint": "x",
                    "split": {}, "train_subjects": [], "teacher_hash": None}, 2)
        runs[cl] = (loop.run().history, loop.model)
    conv = next(m for m in runs[True][1].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(runs[True][0], runs[False][0]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
