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
    in_a_row, smallest_px = plotting.thumbnail_layout(fig)
    plt.close(fig)
    assert in_a_row == 12  # 4 panels of 3
    assert smallest_px >= 40


def _panels(columns: int, nrow: int, figsize: tuple[float, float]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, columns, figsize=figsize, squeeze=False)
    for ax in axes.flat:
        plotting.show_grid(torch.zeros(8, 1, 28, 28), nrow=nrow, ax=ax)
    return fig


def test_thumbnail_layout_counts_side_by_side_grids_and_their_size():
    import matplotlib.pyplot as plt

    fig = _panels(columns=3, nrow=4, figsize=(9, 4))
    in_a_row, smallest_px = plotting.thumbnail_layout(fig)
    assert in_a_row == 12  # two figure rows of three 4-wide grids: 12 side by side, not 24
    box, grid = fig.axes[0].get_window_extent(), fig.axes[0].images[0].get_array()
    expected = min(box.width / grid.shape[1], box.height / grid.shape[0]) * plotting.SAVE_DPI / fig.dpi * 28
    assert smallest_px == pytest.approx(expected)
    plt.close(fig)
    assert plotting.thumbnail_layout(plt.figure()) == (0, float("inf"))
    plt.close("all")


def test_save_figure_refuses_illegible_grids(tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match="16 thumbnails side by side"):
        plotting.save_figure(_panels(columns=4, nrow=4, figsize=(12, 4)), tmp_path, "too_many")
    with pytest.raises(ValueError, match="at least 40 px"):
        plotting.save_figure(_panels(columns=2, nrow=4, figsize=(3, 1.5)), tmp_path, "too_small")
    assert plotting.save_figure(_panels(columns=2, nrow=4, figsize=(6, 4)), tmp_path, "fine").exists()
    assert not (tmp_path / "too_many.png").exists() and not (tmp_path / "too_small.png").exists()
    plt.close("all")
