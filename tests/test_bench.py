import json
import math

import pytest
import torch

from metagan_lib import bench
from metagan_lib.paths import repo_root


def test_counted_flops_of_a_matrix_product_is_its_closed_form():
    a, b = torch.randn(6, 5), torch.randn(5, 7)
    assert bench.counted_flops(lambda: a @ b) == 2 * 6 * 5 * 7


def test_counted_flops_of_a_matrix_product_forward_and_backward_are_the_closed_form():
    """``y = x W^T``, ``x [B, n]``, ``W [m, n]``: 2Bnm forward; backward 2Bnm for ``W``'s gradient and 2Bnm more for
    ``x``'s when ``x`` needs one (a multiply and an add per term)."""
    layer = torch.nn.Linear(5, 3, bias=False)
    x = torch.randn(4, 5)
    assert bench.counted_flops(lambda: layer(x).sum().backward()) == 2 * 2 * 4 * 5 * 3
    x.requires_grad_(True)
    assert bench.counted_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 5 * 3


def test_the_gan_step_counts_the_same_work_every_step():
    step = bench.gan_training_step("conv", 8, 4, torch.device("cpu"))
    flops = bench.counted_flops(step)
    assert flops > 0 and bench.counted_flops(step) == flops


@pytest.mark.parametrize("make_step", [lambda: bench.vae_training_step(10.0, 4, torch.device("cpu")),
                                       lambda: bench.protonet_episode_step(3, 2, 2, torch.device("cpu"))])  # fmt: skip
def test_vae_and_protonet_steps_count_the_same_work_every_step(make_step):
    step = make_step()
    flops = bench.counted_flops(step)
    assert flops > 0 and bench.counted_flops(step) == flops


@pytest.mark.slow  # times every path: about a minute on a 2-core CPU
def test_quick_benchmark_writes_every_path_with_its_roofline(tmp_path):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    paths = {(row["method"], row["path"]) for row in result["rows"]}
    for expected in [("MAML 2nd order", "loop"), ("MAML 2nd order", "vmap"), ("Reptile (5 inner steps)", "vmap"),
                     ("context Reptile", "vmap"), ("context Reptile-query", "vmap"),
                     ("GAN step (conv, width 32)", "batch 64"),
                     ("VAE step (width 32)", "batch 64"), ("VAE-GAN step (width 32)", "batch 64"),
                     ("ProtoNet episode", "20-way 5+5")]:  # fmt: skip
        assert expected in paths
    assert result["matmul_peak_gflops"] > 0
    for row in result["rows"]:
        assert row["gflop_per_step"] > 0 and row["fraction_of_matmul_peak"] > 0
        assert row["achieved_gflops"] == pytest.approx(row["fraction_of_matmul_peak"] * result["matmul_peak_gflops"])
    changes = {(c["change"], c["path"]) for c in result["changes"]}  # every change tried, against eager in this run
    assert ("torch.compile (inductor)", "GAN step (conv, width 32)") in changes
    assert {"channels-last", "one concatenated batch"} <= {change for change, _ in changes}
    for c in result["changes"]:
        assert c["eager_ms"] > 0 and c["changed_ms"] > 0 and math.isfinite(c["speedup_over_eager"])


def test_readme_speed_block_is_the_committed_benchmark_run():
    """The README's speed table is written by ``bench --update-readme``, never by hand: it equals the table of the
    committed ``results/bench_cpu.json``."""
    readme = (repo_root() / "README.md").read_text()
    start, end = bench.SPEED_MARKERS
    block = readme.split(start)[1].split(end)[0].strip()
    result = json.loads((repo_root() / "results" / "bench_cpu.json").read_text())
    assert block == bench.markdown_table(result)


def test_update_readme_replaces_only_the_speed_block(tmp_path):
    result = json.loads((repo_root() / "results" / "bench_cpu.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.SPEED_MARKERS[0]}\nold\n{bench.SPEED_MARKERS[1]}\nend\n")
    bench.update_readme(readme, result)
    assert (
        readme.read_text()
        == f"intro\n{bench.SPEED_MARKERS[0]}\n{bench.markdown_table(result)}\n{bench.SPEED_MARKERS[1]}\nend\n"
    )
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="speed:start"):
        bench.update_readme(readme, result)


@pytest.mark.parametrize("change", ["discriminator, one concatenated batch", "discriminator, channels-last",
                                    "generator, channels-last"])  # fmt: skip
def test_each_layout_change_computes_the_trainers_gradients(change):
    from metagan_lib.bench_modes import layout_cases

    eager, changed, (module, changed_module) = layout_cases(width=8, batch=4)[change]
    eager()
    expected = [p.grad.clone() for p in module.parameters()]
    for p in module.parameters():
        p.grad = None
    changed()
    for want, p in zip(expected, changed_module.parameters()):
        assert torch.allclose(p.grad, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # times 12 forward and backward passes at batch 64
def test_the_layout_mode_reports_a_ratio_per_change_and_width(tmp_path):
    from metagan_lib.bench_modes import run_layout_benchmark

    result = run_layout_benchmark(quick=True)
    assert {(r["change"], r["width"]) for r in result["rows"]} == {
        (c, w) for c in ("discriminator, one concatenated batch", "discriminator, channels-last",
                         "generator, channels-last") for w in (32, 64)
    }  # fmt: skip
    for r in result["rows"]:
        assert r["eager_ms"] > 0 and r["changed_ms"] > 0 and math.isfinite(r["speedup_over_eager"])


def test_flop_operators_are_the_convolutions_and_matrix_products():
    from metagan_lib.bench_modes import is_flop_operator

    for name in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::conv_transpose2d", "aten::addmm",
                 "aten::mm", "aten::bmm"):  # fmt: skip
        assert is_flop_operator(name), name
    for name in ("aten::add_", "aten::native_group_norm", "aten::copy_", "aten::leaky_relu", "ConvolutionBackward0"):
        assert not is_flop_operator(name), name


def test_kernel_row_splits_a_step_into_its_flop_operators_and_the_rest():
    from metagan_lib.bench_modes import kernel_row

    operators = {"aten::mm": 0.004, "aten::mkldnn_convolution": 0.001, "aten::add_": 0.003, "aten::copy_": 0.001}
    row = kernel_row("m", "p", flops=2e9, step_s=0.01, operators=operators, peak=1000.0)
    assert row["fraction_of_matmul_peak"] == pytest.approx(0.2)  # 2 GFLOP in 10 ms = 200 GFLOP/s of 1000
    assert row["flop_operators_ms"] == pytest.approx(5.0)
    assert row["flop_operators_share_of_step"] == pytest.approx(0.5)
    assert row["flop_operators_fraction_of_peak"] == pytest.approx(0.4)  # 2 GFLOP in 5 ms: the step's ceiling
    assert list(row["largest_other_operators_ms"]) == ["aten::add_", "aten::copy_"]


def test_operator_times_find_the_convolutions_of_a_gan_step():
    from metagan_lib.bench_modes import is_flop_operator, operator_times

    times = operator_times(bench.gan_training_step("conv", 8, 4, torch.device("cpu")), repeats=2)
    assert sum(s for name, s in times.items() if is_flop_operator(name)) > 0
    assert any("convolution_backward" in name for name in times)  # the backward pass is profiled too


def test_the_speed_pages_kernels_table_is_the_committed_kernels_run():
    from metagan_lib.bench_modes import kernels_markdown

    result = json.loads((repo_root() / "results" / "bench_kernels_cpu.json").read_text())
    assert kernels_markdown(result) in (repo_root() / "docs" / "speed.md").read_text()
    assert {r["method"] for r in result["rows"]} >= {"GAN step (conv, width 32)", "context Reptile-query"}


def test_interleaved_timing_calls_every_step_in_turn_and_returns_each_median(monkeypatch):
    calls, clock = [], iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))  # each reading one tick after the last
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    medians = bench.time_interleaved(steps, torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, never a step twice in a row
    assert medians == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layouts", "--device", "cuda"], "--layouts measures the CPU: drop --device cuda"),
        (["--parallel", "--device", "tpu"], "--parallel measures the CPU: drop --device tpu"),
        (["--kernels", "--update-readme"], "--update-readme writes the standard benchmark's table only"),
        (["--parallel", "--compile"], "not allowed with argument"),
    ],
)
def test_modes_refuse_settings_they_would_ignore_before_running(argv, message, capsys, monkeypatch):
    import metagan_lib.bench_modes as modes

    for name in ("run_parallel_benchmark", "run_compile_benchmark", "run_layout_benchmark", "run_kernel_benchmark"):
        monkeypatch.setattr(
            modes, name, lambda *a, **k: pytest.fail("the benchmark ran before its settings were checked")
        )
    with pytest.raises(SystemExit) as stop:
        bench.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("measured before the outputs were checked"))
    blocker = tmp_path / "a file"
    blocker.write_text("")
    for argv, message in (
        (["--json", str(blocker / "speed.json")], f"the folder {blocker} cannot be made"),
        (["--json", str(tmp_path)], "is a folder; give a file name"),
    ):
        with pytest.raises(SystemExit) as stop:
            bench.main(["--quick", *argv])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.setattr(bench, "repo_root", lambda: tmp_path)  # a README without the speed markers
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--update-readme"])
    assert "--update-readme: the README must hold one <!-- speed:start -->" in capsys.readouterr().err
