import numpy as np
import pytest
import torch

from metagan_lib import plotting


def test_moving_average_is_the_trailing_mean():
    values = [1.0, 2.0, 6.0, 3.0, 8.0]
    expected = [np.mean(values[max(0, i + 1 - 3) : i + 1]) for i in range(len(values))]
    assert np.allclose(plotting.moving_average(values, 3), expected)
    assert len(plotting.moving_average([], 3)) == 0


def test_image_grid_places_each_image_in_unit_range():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = plotting.image_grid(images, nrow=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 6] == 0.5 and grid[6, 1] == 1.0  # -1 -> 0, 0 -> 0.5, 1 -> 1
    assert grid[6, 6] == 0.5  # the empty cell keeps the background


def test_saved_figures_are_byte_identical_across_saves(tmp_path):
    for name in ("a", "b"):
        fig = plotting.plot_histories({"run": {"step": [1, 2, 3], "d_loss": [1.0, 0.5, 0.2], "g_loss": [2, 1, 1]}})
        plotting.save_figure(fig, tmp_path, name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_clipped_error_bars_stay_inside_the_metric_range():
    below, above = plotting.clipped_error_bars([0.02, 0.5, 0.97], [0.1, 0.1, 0.1], 0.0, 1.0)
    assert below == pytest.approx([0.02, 0.1, 0.1]) and above == pytest.approx([0.1, 0.1, 0.03])
    unbounded = plotting.clipped_error_bars([3.0], [5.0])
    assert unbounded == [[5.0], [5.0]]


def test_adaptation_grids_are_legible_at_the_saved_size():
    """Thumbnails of at least 40 px and at most 12 a row, as GitHub shows the saved PNG."""
    import matplotlib.pyplot as plt

    from metagan_lib.meta import new_meta_gan, standard_configs

    meta = new_meta_gan(standard_configs()["MAML"], "cpu", seed=0)
    shots = torch.rand(2, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fig = plotting.show_adaptation(meta, shots)  # the notebooks' default steps and samples
    fig.canvas.draw()
    first_row = fig.axes[: len(fig.axes) // len(shots)]
    thumbnails_in_a_row, smallest_px = 0, float("inf")
    for ax in first_row:
        grid, box = ax.images[0].get_array(), ax.get_window_extent()
        scale = min(box.width / grid.shape[1], box.height / grid.shape[0]) * plotting.SAVE_DPI / fig.dpi
        smallest_px = min(smallest_px, 28 * scale)
        thumbnails_in_a_row += (grid.shape[1] - 2) // 30  # 28 px images with 2 px padding
    plt.close(fig)
    assert thumbnails_in_a_row <= 12
    assert smallest_px >= 40
