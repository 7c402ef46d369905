"""Forward+backward time of convtrain's from-scratch conv2d vs torch.nn.functional.conv2d.

The article's two layer shapes at batch 64 on the CPU: conv1 1->32 on 28x28, conv2 32->64 on
14x14, both 3x3 with padding 1. Prints the median of several timed repetitions and the ratio
(scratch / torch; lower is better, 1.0 = as fast as PyTorch).

    python bench/conv_speed.py [--batch 64] [--reps 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from convtrain.ops import conv2d

# (name, in, out, size, input needs a gradient): inside the network conv1 reads the image, which
# needs no gradient, while conv2's input does; each layer is timed as it runs in training.
LAYERS = [("conv1 1->32 28x28", 1, 32, 28, False), ("conv2 32->64 14x14", 32, 64, 14, True)]


def time_fb(fn, x, w, b, reps: int) -> float:
    """Median seconds of one forward + backward (input grad included, as inside a network)."""
    times = []
    for i in range(reps + 3):
        x.grad = w.grad = b.grad = None
        t = time.perf_counter()
        y = fn(x, w, b, 1, 1)
        y.backward(torch.ones_like(y))
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    total_t = total_s = 0.0
    for name, cin, cout, hw, input_grad in LAYERS:
        x = torch.randn(args.batch, cin, hw, hw, requires_grad=input_grad)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        b = torch.randn(cout, requires_grad=True)
        # alternate the two so drift in machine load hits both alike
        t_ref, t_ours = [], []
        for _ in range(3):
            t_ref.append(time_fb(F.conv2d, x, w, b, args.reps))
            t_ours.append(time_fb(conv2d, x, w, b, args.reps))
        ref, ours = min(t_ref), min(t_ours)
        total_t, total_s = total_t + ref, total_s + ours
        print(f"{name}: F.conv2d {ref * 1e3:.2f} ms, scratch {ours * 1e3:.2f} ms, ratio {ours / ref:.2f}x")
    print(f"both layers: F.conv2d {total_t * 1e3:.2f} ms, scratch {total_s * 1e3:.2f} ms, ratio {total_s / total_t:.2f}x")


if __name__ == "__main__":
    main()
