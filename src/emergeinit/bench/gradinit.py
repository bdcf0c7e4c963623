"""GradInit (Zhu, Ni, Xu, Kong, Huang & Goldstein, NeurIPS 2021), implemented from the paper.

Every weight tensor ``W_i`` gets a learnable scalar ``m_i`` (start 1): the network runs with
``m_i * W_i``. Each iteration draws two minibatches S1, S2 and computes ``g = dL(S1)/dtheta``.
If the gradient norm ``||g||_p`` exceeds ``gamma`` the scales take a step that lowers it;
otherwise they take a step that lowers the loss *after* one optimizer step,
``L(S2; theta - eta * A[g])`` (A[g] = g for SGD, g / |g| for Adam's first step), differentiated
through ``g`` (second order). The scales are updated with Adam and clamped below at
``min_scale``. p = 2 for SGD and 1 for Adam, as in the paper.

Choices the paper leaves to the implementation, stated here: biases are zero after the base init
and are not scaled; normalization weights are scaled like any other weight (the paper scales
every parameter tensor); weight decay and momentum are ignored in the look-ahead step (the first
step of SGD with momentum is plain SGD); BatchNorm running statistics are restored afterwards.
The paper runs about one epoch of iterations on a GPU; the harness default is 100, a CPU budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Batch = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def gradinit_(
    model: nn.Module,
    sample: Batch,
    *,
    optimizer: str,
    lr: float,
    iterations: int = 100,
    scale_lr: float = 0.01,
    gamma: float = 1.0,
    min_scale: float = 0.01,
    norm: str = "auto",
) -> dict[str, Any]:
    """Rescale ``model``'s weight tensors in place; return the learned scales and a trace.

    ``optimizer`` and ``lr`` are those of the training that follows: GradInit tunes the init for
    that optimizer's first step.
    """
    p = 2.0 if norm == "l2" or (norm == "auto" and optimizer == "sgd") else 1.0
    named = [(n, prm) for n, prm in model.named_parameters() if prm.requires_grad]
    scaled = [n for n, prm in named if not n.endswith("bias")]
    index = {n: i for i, n in enumerate(scaled)}
    base = {n: prm.detach().clone() for n, prm in named}
    buffers = dict(model.named_buffers())
    saved = {n: b.clone() for n, b in buffers.items()}
    scales = torch.ones(len(scaled), requires_grad=True)
    scale_opt = torch.optim.Adam([scales], lr=scale_lr)
    was_training = model.training
    model.train()
    constrained = 0
    try:
        for _ in range(iterations):
            x1, y1 = sample()
            x2, y2 = sample()
            theta = {
                n: (scales[index[n]] * w if n in index else w.requires_grad_())
                for n, w in base.items()
            }
            loss1 = F.cross_entropy(functional_call(model, (theta, buffers), (x1,)), y1)
            grads = torch.autograd.grad(loss1, list(theta.values()), create_graph=True)
            gnorm = torch.cat([g.reshape(-1) for g in grads]).norm(p)
            if gnorm.item() > gamma:
                objective = gnorm
                constrained += 1
            else:
                step = grads if optimizer == "sgd" else [g / (g.abs() + 1e-8) for g in grads]
                ahead = {n: w - lr * s for (n, w), s in zip(theta.items(), step, strict=True)}
                objective = F.cross_entropy(functional_call(model, (ahead, buffers), (x2,)), y2)
            scale_opt.zero_grad(set_to_none=True)
            (scales.grad,) = torch.autograd.grad(objective, [scales])
            scale_opt.step()
            with torch.no_grad():
                scales.clamp_(min=min_scale)
        with torch.no_grad():
            params = dict(named)
            for n, i in index.items():
                params[n].copy_(base[n] * scales[i])
    finally:
        with torch.no_grad():
            for n, b in buffers.items():
                b.copy_(saved[n])
        model.train(was_training)
    return {
        "iterations": iterations,
        "norm_p": p,
        "constrained_steps": constrained,
        "scales": {n: float(scales[i].detach()) for n, i in index.items()},
    }
