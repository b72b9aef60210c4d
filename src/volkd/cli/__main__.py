"""``python -m volkd.cli``: the ``volkd`` command as a module, so ``torchrun`` can launch it.

``torchrun --standalone --nproc_per_node N -m volkd.cli train-teacher COHORT --out runs/t ...``
runs any volkd train command data-parallel: every process joins the process group torchrun
describes before the command runs, and leaves it after: nccl when the command's ``--device``
(default ``auto``) means CUDA — each process then trains on ``cuda:$LOCAL_RANK`` — else gloo on
the CPU (see volkd.train.distributed). Without torchrun (no ``WORLD_SIZE > 1``) it is the plain ``volkd`` command.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from volkd.cli import main as cli_main
from volkd.train.distributed import init_from_env


def main(argv: list[str] | None = None) -> None:
    """Run ``volkd <argv>`` (default: this process's arguments) inside torchrun's process group."""
    args = list(sys.argv[1:] if argv is None else argv)
    device = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--device"), "auto")
    init_from_env(device)
    sys.argv = ["volkd", *args]
    try:
        cli_main()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in the tests
    main()
