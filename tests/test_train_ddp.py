"""DDP with 2 CPU processes (gloo) gives the single-process result for the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from volkd.train.checkpoint import load_checkpoint

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from volkd.distill import get_kd_loss
    from volkd.train.config import TrainConfig
    from volkd.train.data import ArrayData, class_weights
    from volkd.train.distributed import init_from_env
    from volkd.train.loop import Loop, TeacherOutputs

    ctx = init_from_env()
    torch.set_num_threads(1)

    class Tiny(nn.Module):  # no batch-dependent layer (no BatchNorm)
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh())
            self.cls = nn.Linear(6, 2)
        def forward(self, x):
            e = self.enc(x)
            return self.cls(e), e

    g = torch.Generator().manual_seed(0)
    def data(n):
        y = (torch.arange(n) % 3 != 0).long()
        return ArrayData(torch.randn(n, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1), y, torch.arange(n))
    train, val = data(23), data(8)
    teacher = TeacherOutputs(torch.randn(23, 5, generator=g), torch.randn(23, 2, generator=g))
    # global batch 7: shards of 4 and 3 (uneven) and a last batch of 2 (1 + 1)
    cfg = TrainConfig(epochs=3, batch_size=7, lr=0.05, progress=False, augment={"enabled": True})
    torch.manual_seed(0)
    meta = {"kind": "student", "model_spec": {}, "projection_spec": None, "normalizer": {"name": "none"},
            "class_names": ["a", "b"], "config": cfg.model_dump(mode="json"), "seed": 0, "versions": {},
            "cohort_fingerprint": "x", "split": {}, "train_subjects": [], "teacher_hash": None}
    out = __import__("pathlib").Path(sys.argv[1])
    model = Tiny()
    if ctx.is_main:
        out.mkdir(parents=True)
        torch.save({"world": ctx.world, "init": model.state_dict()}, out / "init.pt")
    Loop(model, train, val, cfg, out, meta, 2,
         class_weight=class_weights(train.y.numpy(), 2), kd=get_kd_loss("graph", min_batch=2), teacher=teacher, ctx=ctx).run()
    if ctx.enabled:
        torch.distributed.destroy_process_group()
''')


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    script = tmp_path / "ddp_tiny.py"
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(tmp_path / "single")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "ddp")], tmp_path)
    a, b = load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(tmp_path / "ddp" / "last.pt")
    for k in a.state_dict:
        assert torch.allclose(a.state_dict[k], b.state_dict[k], atol=1e-5, rtol=1e-4), k
    ha, hb = a.train_state["history"], b.train_state["history"]
    assert len(ha) == len(hb) == 3
    for ra, rb in zip(ha, hb):
        for key in ("train_loss", "train_ce", "train_kd", "val_loss", "val_accuracy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key
    assert ha[-1]["train_kd"] > 0
    init_single, init_ddp = (torch.load(tmp_path / d / "init.pt", weights_only=True) for d in ("single", "ddp"))
    assert init_single["world"] == 1 and init_ddp["world"] == 2
    # the weights moved: the comparison is not between two untouched models
    assert not torch.allclose(init_single["init"]["enc.1.weight"], a.state_dict["enc.1.weight"], atol=1e-3)
