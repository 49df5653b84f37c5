import math
import time
from functools import partial

import pytest
import torch

from metagan_lib import context, evaluation, meta, train, vae
from metagan_lib.runtime import (
    WORKERS_ENV_VAR,
    choose_device,
    limited_threads,
    parallel_calls,
    parallel_map,
    worker_count,
)


@pytest.mark.slow  # spawns processes
def test_parallel_map_keeps_the_order_of_the_items():
    items = [7, 3, 10, 0, 5]
    assert parallel_map(math.factorial, items, workers=2) == [math.factorial(i) for i in items]
    assert parallel_calls([partial(pow, 2, 5), partial(divmod, 17, 5)], workers=2) == [32, (3, 2)]


@pytest.mark.slow  # spawns processes
def test_an_error_in_a_worker_reaches_the_caller_with_its_type_and_message():
    with pytest.raises(ValueError, match="math domain error"):
        parallel_map(math.sqrt, [4.0, -1.0], workers=2)


@pytest.mark.slow  # spawns processes
def test_an_error_in_one_job_stops_the_others_instead_of_waiting_for_them():
    start = time.monotonic()
    with pytest.raises(ValueError, match="sleep length must be non-negative"):
        parallel_map(time.sleep, [600, -1], workers=2)
    assert time.monotonic() - start < 120  # the 600-second job was terminated


def test_worker_count(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV_VAR, raising=False)
    assert worker_count(1) == 1
    assert worker_count(50) == min(torch.get_num_threads(), 50)
    assert worker_count(50, "cuda") == 1  # a GPU runs the jobs in turn, in one process
    monkeypatch.setenv(WORKERS_ENV_VAR, "1")
    assert worker_count(50) == 1
    monkeypatch.setenv(WORKERS_ENV_VAR, "3")
    assert worker_count(50) == 3 and worker_count(2) == 2
    monkeypatch.setenv(WORKERS_ENV_VAR, "two")
    with pytest.raises(ValueError, match="METAGAN_WORKERS='two' is not a positive integer"):
        worker_count(50)


def test_limited_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_choose_device_names_the_choices():
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="choose one of auto, cpu, cuda"):
        choose_device("tpu")


def test_a_gpu_index_the_machine_lacks_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a one-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_device("CUDA:0") == torch.device("cuda", 0) and choose_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"device='cuda:7': this machine has 1 GPU\(s\), cuda:0 to cuda:0"):
        choose_device("cuda:7")
    with pytest.raises(ValueError, match="Unknown device 'cudax'"):
        choose_device("cudax")


def test_every_constructor_taking_a_device_refuses_a_gpu_the_machine_lacks_by_name(monkeypatch, strokes):
    """Not torch's "Found no NVIDIA driver" from deep inside ``.to``: the library's message, as for the runner."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU, on every machine
    images = strokes.images[:8]
    calls = {
        "train_gan": lambda: train.train_gan(images, train.GANConfig(steps=1), device="cuda", progress=False),
        "new_run": lambda: train.new_run(train.GANConfig(), device="cuda"),
        "new_meta_gan": lambda: meta.new_meta_gan(meta.MetaConfig(), device="cuda"),
        "new_context_gan": lambda: context.new_context_gan(context.ContextConfig(width=8), device="cuda"),
        "train_feature_net": lambda: evaluation.train_feature_net(strokes, 1, device="cuda", progress=False),
        "new_vae": lambda: vae.new_vae(vae.VAEConfig(z_dim=4, width=8), device="cuda"),
        "load_run": lambda: train.load_run("any.pt", device="cuda"),  # before reading: not taken for a damaged file
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="no CUDA GPU is available here; use 'cpu' or 'auto'"):
            call()
