"""Which strided 1x1 convolutions crash torch's CPU backward in channels_last on this machine.

Each case runs in a child process (a heap corruption kills the process, not this script): a
1x1 stride-2 convolution of C_in -> 2*C_in channels, forward and backward on a 64 x C_in x 32 x 32
batch, in channels_last and in NCHW. ``reprlab.runtime.channels_last_hazard`` turns channels_last
off for a model with such a convolution below 8 input channels (a ResNet below width 8).

    python benchmarks/channels_last_crash.py
"""

from __future__ import annotations

import subprocess
import sys

CASE = """
import sys, torch
torch.set_num_threads(1)
cin, fmt = int(sys.argv[1]), sys.argv[2]
mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
conv = torch.nn.Conv2d(cin, 2 * cin, 1, 2, bias=False).to(memory_format=mf)
x = torch.randn(64, cin, 32, 32).contiguous(memory_format=mf).requires_grad_(True)
for _ in range(3):
    conv(x).sum().backward()
print("ok")
"""


def main() -> None:
    import torch

    print(f"torch {torch.__version__}; 1x1 stride-2 convolution, backward on a 64 x C x 32 x 32 batch")
    print(f"{'C_in':>5}  {'channels_last':<40}  NCHW")
    for cin in (2, 4, 6, 8, 12, 16):
        row = []
        for fmt in ("channels_last", "nchw"):
            p = subprocess.run([sys.executable, "-c", CASE, str(cin), fmt], capture_output=True, text=True, timeout=120)
            row.append("ok" if p.returncode == 0 else f"crash (exit {p.returncode}: {(p.stderr.strip().splitlines() or ['?'])[-1][:28]})")
        print(f"{cin:>5}  {row[0]:<40}  {row[1]}")


if __name__ == "__main__":
    main()
