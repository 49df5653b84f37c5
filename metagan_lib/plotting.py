"""Figures shared by the notebooks: image grids, loss curves, saving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import to_unit
from .seeds import derive_seed

if TYPE_CHECKING:  # annotations only: adaptation imports the training core, which plotting does not need
    from .meta import MetaGAN

SAVE_DPI = 110  # the resolution of every saved figure
THUMBNAIL_INCHES = 0.5  # one 28x28 image in a grid of samples: 55 px at SAVE_DPI
MAX_THUMBNAILS_A_ROW = 12  # legible where GitHub shows a figure (about 880 px wide)
MIN_THUMBNAIL_PX = 40


def use_png_inline() -> None:
    """Show inline figures as PNG (nbval never compares PNG outputs; it would compare SVG)."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # outside Jupyter
        pass


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile ``[B, 1, H, W]`` images in [-1, 1] into one ``[rows*(H+pad)+pad, nrow*(W+pad)+pad]`` array in [0, 1]
    (grey ``pad``-pixel borders)."""
    images = to_unit(images.detach().float().cpu())[:, 0]
    count, height, width = images.shape
    rows = (count + nrow - 1) // nrow
    grid = np.ones((rows * (height + pad) + pad, nrow * (width + pad) + pad), dtype=np.float32) * 0.5
    for index in range(count):
        r, c = divmod(index, nrow)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = images[index].numpy()
    return grid


def show_grid(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Draw a grid of images on ``ax`` (a new figure when ``None``)."""
    if ax is None:
        rows = (len(images) + nrow - 1) // nrow
        _, ax = plt.subplots(figsize=(nrow * 0.6, rows * 0.6 + 0.4))
    shown = ax.imshow(image_grid(images, nrow), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    shown.grid_columns, shown.thumbnail_width = min(nrow, len(images)), images.shape[-1]  # read by thumbnail_layout
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (cumulative[1:] - cumulative[starts]) / (np.arange(1, len(values) + 1) - starts)


HISTORY_TITLES = {"d_real": "d_real = mean logit of D(x)", "d_fake": "d_fake = mean logit of D(G(z))"}


def plot_histories(
    histories: Mapping[str, Mapping[str, Sequence[float]]], keys: Sequence[str] = ("d_loss", "g_loss"), window: int = 50
) -> plt.Figure:
    """One panel per key, one smoothed curve per run; a key in ``HISTORY_TITLES`` is titled with what it measures."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            ax.plot(history["step"], moving_average(history[key], window), label=name)
        ax.set_xlabel("generator step")
        ax.set_title(f"{HISTORY_TITLES.get(key, key)} (moving average over {window})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def clipped_error_bars(
    means: Sequence[float], half_widths: Sequence[float], low: float = float("-inf"), high: float = float("inf")
) -> list[list[float]]:
    """Asymmetric error bars ``[[below...], [above...]]`` for ``mean ± half_width``, cut at ``[low, high]``."""
    below = [min(h, m - low) for m, h in zip(means, half_widths)]
    above = [min(h, high - m) for m, h in zip(means, half_widths)]
    return [below, above]


def thumbnail_layout(fig: plt.Figure) -> tuple[int, float]:
    """``(most thumbnails side by side in one row of the figure, smallest thumbnail's width in px at SAVE_DPI)``
    over the image grids drawn by :func:`show_grid`; ``(0, inf)`` when there are none."""
    fig.canvas.draw()
    grids = []  # (bottom, top, columns, thumbnail px) per grid
    for ax in fig.axes:
        for shown in ax.images:
            if hasattr(shown, "grid_columns"):
                box, grid = ax.get_window_extent(), shown.get_array()
                scale = min(box.width / grid.shape[1], box.height / grid.shape[0]) * SAVE_DPI / fig.dpi
                grids.append((box.y0, box.y1, shown.grid_columns, shown.thumbnail_width * scale))
    in_a_row = [sum(c for bottom, top, c, _ in grids if bottom <= (low + high) / 2 <= top) for low, high, _, _ in grids]
    return max(in_a_row, default=0), min((px for *_, px in grids), default=float("inf"))


def save_figure(fig: plt.Figure, folder: Path, name: str) -> Path:
    """Save ``fig`` as ``folder/name.png`` (no timestamp metadata, so reruns give equal files).

    Raises:
        ValueError: its image grids put more than ``MAX_THUMBNAILS_A_ROW`` thumbnails side by side, or draw one smaller
            than ``MIN_THUMBNAIL_PX`` (illegible where GitHub shows the figure).
    """
    in_a_row, smallest_px = thumbnail_layout(fig)
    if in_a_row > MAX_THUMBNAILS_A_ROW or smallest_px < MIN_THUMBNAIL_PX:
        raise ValueError(
            f"Figure {name!r} draws {in_a_row} thumbnails side by side, the smallest {smallest_px:.0f} px wide; "
            f"keep at most {MAX_THUMBNAILS_A_ROW} a row of at least {MIN_THUMBNAIL_PX} px "
            "(fewer images a row, panels in more rows, or a larger figsize)."
        )
    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def show_adaptation(
    meta: MetaGAN,
    shots: torch.Tensor,
    steps: Sequence[int] = (0, 5, 20),
    samples: int = 6,
    seed: int = 0,
    per_row: int = 3,
) -> plt.Figure:
    """For each task in ``shots`` (``[T, K, 1, 28, 28]``): the K shots, then ``samples`` samples after each number of
    adaptation steps, each panel in rows of ``per_row`` images (a figure row holds ``(1 + len(steps)) * per_row``
    thumbnails of about 50 px when saved).

    Step 0 is the meta-initialisation itself. Uses :func:`metagan_lib.adaptation.adapt` and ``sample``.
    """
    from .adaptation import adapt, sample

    tasks, columns = len(shots), 1 + len(steps)
    panel_rows = -(-max(shots.shape[1], samples) // per_row)
    size = THUMBNAIL_INCHES * 30 / 28  # an image and its padding
    fig, axes = plt.subplots(
        tasks, columns, figsize=(size * per_row * columns, tasks * (size * panel_rows + 0.1) + 0.35), squeeze=False
    )
    for row in range(tasks):
        show_grid(shots[row], nrow=per_row, title="K shots" if row == 0 else None, ax=axes[row][0])
        row_seed = derive_seed(seed, "row", row)
        for col, k in enumerate(steps, 1):
            adapted = adapt(meta, shots[row], steps=k, seed=row_seed) if k > 0 else None
            title = (f"after {k} steps" if k else "meta-init") if row == 0 else None
            show_grid(sample(meta, adapted, samples, seed=row_seed), nrow=per_row, title=title, ax=axes[row][col])
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.4)
    return fig
