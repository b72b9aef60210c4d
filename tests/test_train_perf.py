"""volkd.train.perf: the matmul roof and FLOP counts of a training step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from volkd.errors import ConfigError
from volkd.train.perf import matmul_peak_gflops, step_flops


def test_matmul_peak_is_a_plausible_rate_and_restores_threads():
    before = torch.get_num_threads()
    peak = matmul_peak_gflops(threads=1, size=256, min_seconds=0.02, repeats=2)
    assert math.isfinite(peak) and 0.5 < peak < 10_000  # GFLOP/s per core of any CPU in use
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads, size and repeats must be ≥ 1"):
        matmul_peak_gflops(threads=0)
    with pytest.raises(ConfigError, match="min_seconds > 0"):
        matmul_peak_gflops(min_seconds=0)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 6)
        self.cls = nn.Linear(6, 2)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.bn(self.enc(x))
        return self.cls(e), e


def test_step_flops_counts_forward_and_backward_matmuls_and_leaves_the_model_alone():
    torch.manual_seed(0)
    m = TwoHeads().eval()
    x = torch.randn(8, 16)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flops = step_flops(m, x)
    # forward: 2·8·16·6 + 2·8·6·2; backward: the same again for the weight gradients, plus the
    # input gradient of `cls` (2·8·2·6); `enc`'s input needs no gradient
    fwd = 2 * 8 * 16 * 6 + 2 * 8 * 6 * 2
    assert flops == 2 * fwd + 2 * 8 * 2 * 6
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # BN running stats untouched
    assert all(p.grad is None for p in m.parameters()) and not m.training
