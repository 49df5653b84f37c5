"""Watching training in TensorBoard: losses as scalars, sample grids as images.

The GAN, meta-GAN and context meta-GAN trainers (``train_gan``, ``MetaTrainer.train``, ``ContextTrainer.train``) take
``log_dir``; when it is set, a :class:`Monitor` writes TensorBoard event files there (``tensorboard --logdir
<log_dir>`` shows them), when it is ``None`` nothing is written. The smaller trainers (VAE, feature and prototypical
networks, the sine regressors) show a progress bar only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from .images import to_unit


class Monitor:
    """Scalars and image grids to TensorBoard when ``log_dir`` is given; a no-op otherwise."""

    def __init__(self, log_dir: str | Path | None):
        self.writer = None
        if log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "log_dir needs the tensorboard package: pip install tensorboard "
                    "(it is among this project's dependencies; run make venv)."
                ) from error
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One point per name at ``step``."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def images(self, tag: str, step: int, images: torch.Tensor, nrow: int = 4) -> None:
        """A grid of images ``[B, 1, H, W]`` in [-1, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, make_grid(to_unit(images.detach().cpu()), nrow=nrow), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def monitored_steps(
    step: Callable[[], dict[str, float]],
    steps: int,
    step_count: Callable[[], int],
    *,
    description: str,
    progress: bool = True,
    log_dir: str | Path | None = None,
    postfix_every: int = 10,
) -> None:
    """Call ``step`` ``steps`` times under a progress bar; the losses it returns (name -> value) go to TensorBoard at
    ``step_count()`` when ``log_dir`` is set, and to the bar every ``postfix_every`` calls."""
    bar = tqdm(range(steps), desc=description, disable=not progress, leave=False)
    monitor = Monitor(log_dir)
    try:
        for index in bar:
            losses = step()
            monitor.scalars(step_count(), losses)
            if progress and index % postfix_every == 0:
                bar.set_postfix({name: f"{value:.3f}" for name, value in losses.items()})
    finally:
        monitor.close()
