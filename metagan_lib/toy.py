"""MAML on sine-wave regression (Finn et al. 2017), the toy problem of notebook 03.

A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``, ``x ~ U[-5, 5]``.
The same :func:`metagan_lib.meta.sgd_step` as the meta-GANs does the inner loop, and the same
``vmap``-over-tasks pattern batches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from . import seeds
from .meta import Params, sgd_step
from .runtime import limited_threads


@dataclass(frozen=True)
class SineTasks:
    """``T`` tasks: support ``x_s, y_s`` ``[T, K, 1]``, query ``x_q, y_q`` ``[T, Q, 1]``, amplitude and phase
    ``[T]``."""

    x_s: torch.Tensor
    y_s: torch.Tensor
    x_q: torch.Tensor
    y_q: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor


def sample_sine_tasks(
    tasks: int, shots: int, queries: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> SineTasks:
    """Draw ``tasks`` sine tasks with ``shots`` support and ``queries`` query points each."""
    u = lambda *shape: torch.rand(*shape, generator=generator, device=device)
    amplitude, phase = 0.1 + 4.9 * u(tasks), math.pi * u(tasks)
    x = 10 * u(tasks, shots + queries, 1) - 5
    y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
    return SineTasks(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], amplitude, phase)


def sine_model(seed: int = 0, hidden: int = 40) -> nn.Module:
    """The MLP of the MAML paper: 1 -> 40 -> 40 -> 1 with ReLU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )


def mse(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``model`` called with ``params`` on the points ``x`` against the targets ``y``."""
    return (functional_call(model, params, (x,)) - y).pow(2).mean()


def adapt_regression(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
) -> Params:
    """``steps`` gradient steps of MSE on ``(x, y)`` from ``params`` (differentiable unless ``first_order``)."""
    for _ in range(steps):
        params = sgd_step(params, lambda p: mse(model, p, x, y), inner_lr, first_order)
    return params


def query_losses(
    model: nn.Module,
    params: Params,
    tasks: SineTasks,
    inner_lr: float,
    steps: int,
    first_order: bool,
    vectorised: bool = True,
) -> torch.Tensor:
    """Query MSE ``[T]`` of each task after adapting on its support set (``steps=0``: no adaptation)."""

    def one(x_s, y_s, x_q, y_q):
        return mse(model, adapt_regression(model, params, x_s, y_s, inner_lr, steps, first_order), x_q, y_q)

    args = (tasks.x_s, tasks.y_s, tasks.x_q, tasks.y_q)
    if vectorised:
        return vmap(one)(*args)
    return torch.stack([one(*a) for a in zip(*args)])


@dataclass
class SineRun:
    """A sine meta-training's result: the meta-parameters and the mean query loss after adaptation at each
    meta-step (the outer loss)."""

    params: Params
    history: list[float] = field(default_factory=list)


def train_sine(
    model: nn.Module,
    meta_steps: int,
    *,
    inner_steps: int = 1,
    inner_lr: float = 0.01,
    first_order: bool = False,
    tasks: int = 25,
    shots: int = 10,
    meta_lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    description: str = "MAML (sine)",
) -> SineRun:
    """Meta-train ``model``'s initialisation with MAML (``inner_steps=0``: plain multi-task pretraining).

    Runs on one thread: the 40-unit MLP's products are too small to gain from more.
    """
    with limited_threads(1):
        params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        optimizer = torch.optim.Adam(params.values(), lr=meta_lr)
        generator = seeds.generator(seed, "sine tasks")
        run = SineRun(params)
        for _ in tqdm(range(meta_steps), desc=description, disable=not progress, leave=False):
            batch = sample_sine_tasks(tasks, shots, shots, generator)
            loss = query_losses(model, params, batch, inner_lr, inner_steps, first_order).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.history.append(loss.item())
        return run


def evaluate_sine(
    model: nn.Module, params: Params, tasks: SineTasks, inner_lr: float, steps: list[int]
) -> dict[int, float]:
    """Mean query MSE after each number of adaptation steps in ``steps``."""
    return {s: query_losses(model, params, tasks, inner_lr, s, first_order=True).mean().item() for s in steps}
