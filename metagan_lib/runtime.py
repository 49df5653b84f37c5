"""Device choice and seeding, done once at the top of a notebook or script; independent jobs side by side on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import random
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

T = TypeVar("T")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given.

    Raises:
        ValueError: unknown spec, or CUDA asked for where none is available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda'; got {spec!r}.")
    key = spec.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} was asked for but no CUDA GPU is available here; use 'cpu' or 'auto'.")
        try:
            device = torch.device(key)
        except RuntimeError:
            raise ValueError(f"Unknown device {spec!r}; write 'cuda' or 'cuda:<index>'.") from None
        count = torch.cuda.device_count()
        if device.type != "cuda" or (device.index or 0) >= count:
            raise ValueError(f"device={spec!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
        return device
    raise ValueError(f"Unknown device {spec!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (every device's); the library's own draws come from
    :mod:`metagan_lib.seeds`, whose generators are made on the device they draw for."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Independent jobs side by side on a CPU
# ---------------------------------------------------------------------------------------------

WORKERS_ENV_VAR = "METAGAN_WORKERS"


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """Run the block with at most ``threads`` intra-op threads (restored afterwards).

    Tiny networks (the sine MLP) run faster on one thread than on two: thread start-up costs
    more than their matrix products.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_count(jobs: int, device: torch.device | str = "cpu") -> int:
    """How many processes :func:`parallel_map` uses for ``jobs`` jobs.

    One on a GPU (the jobs share it better in one process) and one when ``$METAGAN_WORKERS=1``;
    on a CPU, one per core (``torch.get_num_threads()``) up to ``jobs``, or ``$METAGAN_WORKERS``.
    """
    if torch.device(device).type != "cpu" or jobs <= 1:
        return 1
    setting = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(
                f"${WORKERS_ENV_VAR}={setting!r} is not a positive integer; unset it or set e.g. {WORKERS_ENV_VAR}=1."
            )
        return min(int(setting), jobs)
    return max(1, min(torch.get_num_threads(), jobs))


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(threads: int, parent: int) -> None:
    """Worker set-up: its thread count, and on Linux SIGTERM when its parent dies, so a killed run leaves no idle
    workers behind (Ctrl-C is left to the parent: workers start with SIGINT ignored, see
    :func:`_workers_ignore_sigint`)."""
    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def _invoke(call: Callable[[], T]) -> T:
    return call()


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Processes spawned inside inherit SIGINT ignored, from their first instruction (an interrupt is the parent's to
    handle)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def parallel_map(
    fn: Callable[[Any], T],
    items: Sequence[Any],
    *,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    description: str | None = None,
) -> list[T]:
    """``[fn(item) for item in items]``, computed by several processes on a CPU.

    Why: a 2-core CPU runs two single-threaded jobs faster than the same jobs one after the other
    on two threads, since small convolutions split poorly over threads (``python -m metagan_lib.bench
    --parallel`` measures the ratio). Each worker gets ``torch.get_num_threads() // workers`` threads;
    processes are *spawned* (never forked from a process whose thread pool is running). ``fn`` and the
    items must be picklable:
    module-level functions, ``functools.partial`` of them, tensors, modules. Every job must seed
    its own randomness: results then do not depend on which worker ran it, and equal, bit for bit,
    those of this process on the worker's thread count (on another thread count, floating-point
    sums add in another order, so they differ by rounding).

    A job's error, or an interrupt, terminates the other workers at once and reaches the caller; workers also
    end when their parent process dies. On a GPU, with one worker (``$METAGAN_WORKERS=1``) or one item, runs here.
    """
    items = list(items)
    workers = worker_count(len(items), device) if workers is None else max(1, min(workers, len(items)))
    bar = tqdm(total=len(items), desc=description, disable=description is None, leave=False)
    if workers == 1:
        results = []
        for item in items:
            results.append(fn(item))
            bar.update()
        bar.close()
        return results
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid()))
    try:
        with _workers_ignore_sigint():
            futures = [pool.submit(fn, item) for item in items]  # the workers are spawned here
        for future in as_completed(futures):
            future.result()  # raises a job's error as soon as it happens
            bar.update()
        return [future.result() for future in futures]
    except BaseException:  # an interrupt, or a job's error: stop the other jobs now rather than wait for them
        for process in list(pool._processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def parallel_calls(calls: Sequence[Callable[[], T]], **kwargs) -> list[T]:
    """:func:`parallel_map` over zero-argument callables (e.g. ``functools.partial`` of module-level functions)."""
    return parallel_map(_invoke, calls, **kwargs)
