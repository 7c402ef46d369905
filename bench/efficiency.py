"""How close the article config's training step is to this machine's matrix-multiply limit.

For configs/mnist.yaml (article CNN, batch 64, fused Adam, channels_last, as convtrain runs it):

- FLOPs per step, counted from the model by torch.utils.flop_counter.FlopCounterMode over one real
  forward + backward at the config's batch size (matmuls and convolutions: what the counter
  counts; Adam's and the elementwise layers' few FLOPs are left out, as is usual);
- the seconds per step of the real loop (engine.train_one_epoch on the real, tensor-resident
  batches: indexing, normalization, forward, backward, Adam), hence achieved GFLOP/s;
- fp32 torch.mm rates measured in the same run: one large square GEMM (2048^3) and the three
  GEMMs of conv2 at this batch (its forward and its two backward products, as im2col shapes). The
  ratio uses the best of these four (the matmul peak this machine showed in this run: the
  strictest denominator; the ratio to the square GEMM alone is printed too).

Then a profiled stretch of steps says where the time goes by operator group (convolutions, linear
layers, pooling, zero-fills, ReLU, Adam, the rest) and what rate the GEMM-type operators reach on
their own: the distance to the limit that is in the GEMMs, and the part that is not.

Peaks and steps are measured alternately (peak, steps, peak, ...) and the best of each is kept,
so a burst of load from elsewhere does not count against one side only.

    python bench/efficiency.py [--config configs/mnist.yaml] [--steps 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def gemm_rate(m: int, k: int, n: int, reps: int = 20) -> float:
    """Best GFLOP/s of an fp32 (m x k) @ (k x n) over ``reps`` timed runs (after a warm-up)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def conv2_gemms(batch: int) -> dict[str, tuple[int, int, int]]:
    """conv2 (32->64, 3x3, 14x14) as im2col GEMMs: forward, weight gradient, input gradient."""
    pixels, patch, cout = batch * 14 * 14, 32 * 9, 64
    return {"forward": (pixels, patch, cout), "weight grad": (cout, pixels, patch), "input grad": (pixels, cout, patch)}


def count_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, dict]:
    """FLOPs of one forward + backward, counted by PyTorch from the model's own operators."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts()
    leaves = [n for n in counts if n != "Global" and not any(o.startswith(n + ".") for o in counts)]
    per_module = {n: sum(counts[n].values()) for n in leaves}
    return counter.get_total_flops(), per_module


def build(config: str):
    """The run's own data, model and optimizer, built by the runner's phases."""
    from convtrain.config.load import load_config
    from convtrain.training import runner

    cfg = load_config(config, ["device=cpu"])
    dist, _ = runner.setup_process(cfg, None)
    d = runner.setup_data(cfg, dist)
    model = runner.build_model(cfg, d.bundle, dist, runner.Start(cfg), runner.Reporter(enabled=False))
    optim = runner.build_optim(model, cfg, dist.device, d.steps_per_epoch)
    return cfg, d, model, optim


def time_steps(d, model, optim, steps: int, epoch: int) -> float:
    """Seconds per step of the real loop over ``steps`` steps (one warm-up step not counted)."""
    from convtrain.training import engine

    d.train.set_epoch(epoch)
    batches = d.train.iter_from(0)
    engine.train_one_epoch(model, batches, 1, optim.optimizer, None, epoch=epoch, device=torch.device("cpu"))
    out = engine.train_one_epoch(model, batches, steps, optim.optimizer, None, epoch=epoch,
                                 device=torch.device("cpu"), state=engine.EpochState(step=1))
    return out.state.seconds / (steps - 1)


# operator groups for the breakdown of a step (self time of each aten operator, as the profiler sees it)
GROUPS = {
    "convolutions (GEMM work)": ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution"),
    "linear layers (GEMM work)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "max-pool forward + backward": ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"),
    "zero-fills (pool backward, grads)": ("aten::fill_", "aten::zero_"),
    "ReLU forward + backward": ("aten::clamp_min", "aten::threshold_backward", "aten::relu"),
    "Adam (fused)": ("aten::_fused_adam_",),
}


def breakdown(d, model, optim, steps: int, flops_gemm: float) -> None:
    """Where a step's time goes, by operator group (torch.profiler; its own overhead inflates the
    small operators a little), and the rate the GEMM-type operators reach on their own."""
    from torch.profiler import ProfilerActivity, profile

    from convtrain.training import engine

    d.train.set_epoch(99)
    batches = d.train.iter_from(0)
    engine.train_one_epoch(model, batches, 2, optim.optimizer, None, epoch=99, device=torch.device("cpu"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = engine.train_one_epoch(model, batches, steps + 2, optim.optimizer, None, epoch=99,
                                     device=torch.device("cpu"), state=engine.EpochState(step=2))
    wall = out.state.seconds / steps
    self_s = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    grouped = {g: sum(self_s.get(k, 0.0) for k in keys) for g, keys in GROUPS.items()}
    print(f"where a step goes (profiled, {wall * 1e3:.2f} ms per step under the profiler):")
    for g, t in grouped.items():
        print(f"    {g:36s} {t * 1e3:6.2f} ms  {t / wall:5.1%}")
    rest = wall - sum(grouped.values())
    print(f"    {'everything else (Python, indexing, ...)':36s} {rest * 1e3:6.2f} ms  {rest / wall:5.1%}")
    gemm = grouped["convolutions (GEMM work)"] + grouped["linear layers (GEMM work)"]
    print(f"  the GEMM-type operators alone: {flops_gemm / gemm / 1e9:.1f} GFLOP/s over their own {gemm * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/mnist.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg, d, model, optim = build(args.config)
    x, y = next(iter(d.train.iter_from(0)))
    flops, per_module = count_flops(model, x, y)
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{args.config}: model {cfg.model.name}, batch {x.shape[0]}: {flops / 1e9:.3f} GFLOP per step "
          f"(forward + backward, counted by FlopCounterMode)")
    for name, f in sorted(per_module.items(), key=lambda kv: -kv[1]):
        print(f"    {name:28s} {f / 1e9:.3f} GFLOP")
    square, shaped, step = 0.0, {k: 0.0 for k in conv2_gemms(x.shape[0])}, float("inf")
    for r in range(args.rounds):
        square = max(square, gemm_rate(2048, 2048, 2048, reps=5))
        for k, shape in conv2_gemms(x.shape[0]).items():
            shaped[k] = max(shaped[k], gemm_rate(*shape))
        step = min(step, time_steps(d, model, optim, args.steps, r + 1))
    achieved = flops / step / 1e9
    print(f"fp32 matmul peak: square 2048^3 {square:.1f} GFLOP/s; conv2's GEMMs at this batch: "
          + ", ".join(f"{k} {v:.1f}" for k, v in shaped.items()) + " GFLOP/s")
    print(f"training step: {step * 1e3:.2f} ms ({x.shape[0] / step:.0f} img/s) = {achieved:.1f} GFLOP/s achieved")
    peak = max(square, *shaped.values())
    print(f"ratio to the matmul peak (the best GEMM rate measured in this run, {peak:.1f} GFLOP/s): "
          f"{achieved / peak:.1%} (goal >= 90%); to the square GEMM alone: {achieved / square:.1%}")
    breakdown(d, model, optim, args.steps, flops)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
