"""How fast this machine multiplies, and how many FLOPs a training step costs.

``matmul_peak_gflops()`` measures the float32 matmul rate of one CPU core (the roof that
achieved GFLOP/s are compared with in a study's cost table); ``step_flops(model, x)`` counts
the FLOPs of one forward + backward pass with ``torch.utils.flop_counter.FlopCounterMode``.
Rates use CPU time (``time.process_time``), so a busy machine lowers them less than wall time.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from volkd.errors import ConfigError


def matmul_peak_gflops(threads: int = 1, size: int = 1024, min_seconds: float = 0.2, repeats: int = 3) -> float:
    """Float32 GFLOP/s per core of ``size``×``size`` matmuls on ``threads`` torch threads: the best
    of ``repeats`` rounds, each at least ``min_seconds`` of CPU time, as FLOPs / CPU seconds.
    The thread count is restored afterwards."""
    if threads < 1 or size < 1 or repeats < 1 or min_seconds <= 0:
        raise ConfigError(f"matmul_peak_gflops: threads, size and repeats must be ≥ 1 and min_seconds > 0 "
                          f"(got threads={threads}, size={size}, repeats={repeats}, min_seconds={min_seconds})")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g)
        b = torch.randn(size, size, generator=g)
        out = torch.empty(size, size)
        torch.mm(a, b, out=out)  # warm-up: thread pool, kernel selection
        flops_per_mm = 2.0 * size ** 3
        best = 0.0
        for _ in range(repeats):
            n, t0 = 0, time.process_time()
            while True:
                torch.mm(a, b, out=out)
                n += 1
                spent = time.process_time() - t0
                if spent >= min_seconds:
                    break
            best = max(best, n * flops_per_mm / spent / 1e9)
        return best
    finally:
        torch.set_num_threads(prev)


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward pass of ``model`` on batch ``x``
    (``model(x)`` returns a tensor or a tuple of them; all outputs get a gradient). The
    model's weights, gradients and BatchNorm statistics are left as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            out = model(x)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            sum(o.float().sum() for o in outs if o.requires_grad).backward()
        return int(counter.get_total_flops())
    finally:
        model.load_state_dict(state)
        for n, p in model.named_parameters():
            p.grad = grads[n]
        model.train(was_training)
