"""The job process of ``gpu_forkserver_check.py``: started as the training child would be
(forked by the fork server, or fresh with ``python -m``), it uses CUDA and prints one JSON
line: how long from its entry to its first CUDA result, its parent, the GPU it saw and its
peak memory. ``sys.argv[1]`` is the size (MiB) of the tensor it keeps while it works."""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    entered = time.monotonic()
    warm = "torch" in sys.modules  # imported before the fork: the fork server's work
    import torch

    hold_mb = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 512
    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    (a @ a).sum().item()  # the first CUDA result: context, allocator, a kernel
    first_result_s = time.monotonic() - entered
    held = torch.empty(hold_mb * 2**20, dtype=torch.uint8, device=device)
    held.fill_(1)
    torch.cuda.synchronize()
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "torch_was_imported": warm,
                "device": torch.cuda.get_device_name(0),
                "first_cuda_result_s": round(first_result_s, 3),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
