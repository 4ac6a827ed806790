"""A child module for ``test_forkserver_torch``: imported by the fork server, it makes
torch answer as it does once the CUDA driver was queried before a fork (no GPU needed)."""

from __future__ import annotations

import torch

torch.cuda._is_in_bad_fork = lambda: True


def main() -> int:
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
