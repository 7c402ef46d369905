"""The optimizer and learning-rate schedule a run config asks for (``optim.*``, ``sched.*``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.schema import RunConfig
from ..errors import ConfigError


def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over trainable parameters; when fine-tuning, head and backbone get their own lr."""
    o, ft = cfg.optim, cfg.finetune
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("every parameter is frozen: nothing to train (check finetune.freeze)")
    if ft.checkpoint and (ft.head_lr is not None or ft.backbone_lr is not None):
        head = [p for n, p in trainable if n.startswith("head.")]
        rest = [p for n, p in trainable if not n.startswith("head.")]
        groups = [g for g in ({"params": rest, "lr": ft.backbone_lr or o.lr, "name": "backbone"},
                              {"params": head, "lr": ft.head_lr or o.lr, "name": "head"}) if g["params"]]
    else:
        groups = [{"params": [p for _, p in trainable], "lr": o.lr, "name": "all"}]
    # fused Adam/AdamW (one kernel for all parameters; CUDA, and CPU since torch 2.4) measured 6% faster
    # per training step than the default on the CPU; fused SGD gains nothing here
    extra = {"fused": True} if device.type in ("cuda", "cpu") and o.name != "sgd" else {}
    if o.name == "adam":
        return Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **extra)
    if o.name == "adamw":
        return AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **extra)
    return SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


# --------------------------------------------------------------------------------------------
# torch.optim without its start-up import of torch._dynamo
#
# torch.optim's methods are wrapped so that torch.compile leaves them alone (torch._disable_dynamo,
# and step's _use_grad_for_differentiable); the wrappers import torch._dynamo on their first call,
# which is the optimizer's constructor: 1.1-1.5 s of CPU time here, as much as `import torch` itself,
# paid by every run although convtrain never compiles an optimizer (speed.compile wraps the model
# only). These classes call the wrapped functions (functools' __wrapped__) directly; the state, the
# state_dict format and the arithmetic are torch's own. A torch without __wrapped__ gets the
# wrapped method, i.e. the import again, never a different result.


def _unwrapped(method):
    return getattr(method, "__wrapped__", method)


def _plain_step(step):
    raw = _unwrapped(step)

    def plain(self, closure=None):
        # what _use_grad_for_differentiable does for differentiable=False (convtrain never sets it)
        with torch.no_grad():
            return raw(self, closure)
    plain.__doc__ = step.__doc__
    return plain


class _NoDynamoImport:
    """The methods torch.optim.Optimizer wraps with torch._disable_dynamo, called unwrapped."""

    def add_param_group(self, param_group) -> None:
        _unwrapped(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _unwrapped(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self):
        return _unwrapped(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict) -> None:
        _unwrapped(torch.optim.Optimizer.load_state_dict)(self, state_dict)


class Adam(_NoDynamoImport, torch.optim.Adam):
    step = _plain_step(torch.optim.Adam.step)


class AdamW(_NoDynamoImport, torch.optim.AdamW):
    step = _plain_step(torch.optim.AdamW.step)


class SGD(_NoDynamoImport, torch.optim.SGD):
    step = _plain_step(torch.optim.SGD.step)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
    """A per-step schedule (so a mid-epoch resume lands on the same lr), or None."""
    s = cfg.sched
    total = steps_per_epoch * cfg.train.epochs
    if s.name == "none":
        return None
    if s.name == "step":
        every = s.step_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: s.gamma ** (step // every))
    if s.name == "cosine":
        warmup = int(round(s.warmup_epochs * steps_per_epoch))

        def factor(base_lr: float):
            floor = min(s.min_lr / base_lr, 1.0)

            def f(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = min((step - warmup) / max(total - warmup, 1), 1.0)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            return f
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["lr"]) for g in optimizer.param_groups])
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                               total_steps=total, pct_start=s.pct_start)
