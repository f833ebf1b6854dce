"""Wall-clock timing of several variants in one process, and peak memory of one call.

On a shared or noisy machine, absolute times drift; variants are therefore timed *interleaved*
(each repeat runs every variant once, in alternating order A B C, C B A, ...), so slow phases hit all
of them alike, and ratios are taken per repeat (:func:`paired_ratio`) before the median.

Two clocks are recorded for every call: wall-clock time (``time.perf_counter``) and the process's CPU
time (``time.process_time``). With one thread on a CPU, CPU time counts only the time this process
actually ran, so it is not inflated when other processes take the cores; with several threads it
also counts threads spinning at barriers and is not a measure of speed (see :func:`pick_clock`).
"""
from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = ("wall", "cpu")
"""``wall``: ``time.perf_counter``; ``cpu``: ``time.process_time`` (all threads of the process)."""


def pick_clock(spec: str, device: torch.device, threads: int) -> str:
    """``auto`` -> ``cpu`` for a single-threaded CPU run, else ``wall``; other values pass through.

    Raises:
        ValueError: unknown clock.
    """
    if spec == "auto":
        return "cpu" if device.type == "cpu" and threads == 1 else "wall"
    if spec not in CLOCKS:
        raise ValueError(f"--clock={spec!r}; choose auto, wall or cpu")
    return spec


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    warmup_fns: dict[str, Callable[[], object]] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Run every function ``warmup`` times untimed, then ``repeats`` timed rounds, interleaved.

    Args:
        fns: name -> zero-argument callable (one unit of work, e.g. a training step on the batches).
        repeats: timed rounds (>= 1).
        warmup: untimed rounds before (>= 0).
        device: for GPU synchronisation around each call.
        warmup_fns: cheaper stand-ins used for the warm-up rounds (default: ``fns``).

    Returns:
        clock (``wall``, ``cpu``) -> name -> ``repeats`` durations in seconds, in round order.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    names = list(fns)
    warm = warmup_fns or fns
    for _ in range(warmup):
        for name in names:
            warm[name]()
            synchronize(device)
    times: dict[str, dict[str, list[float]]] = {c: {name: [] for name in names} for c in CLOCKS}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            synchronize(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            synchronize(device)
            times["wall"][name].append(time.perf_counter() - t0)
            times["cpu"][name].append(time.process_time() - c0)
    return times


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of ``num[i] / den[i]`` (times of the same interleaved round)."""
    return median([a / b for a, b in zip(num, den)])


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so RSS deltas show new allocations."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def _rss_sampler(period: float = 0.002) -> Iterator[dict]:
    out: dict = {"start": _rss_bytes(), "peak": _rss_bytes()}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            rss = _rss_bytes()
            if rss is not None and out["peak"] is not None:
                out["peak"] = max(out["peak"], rss)
            stop.wait(period)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


@contextmanager
def _saved_tensor_bytes(exclude: set[int]) -> Iterator[dict]:
    """Sum of distinct storages autograd saves for the backward pass while the context is open,
    leaving out storages whose data pointer is in ``exclude`` (the model's weights)."""
    out = {"bytes": 0}
    seen: set[int] = set(exclude)

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            out["bytes"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out


def parameter_storages(model: torch.nn.Module) -> set[int]:
    """Data pointers of a model's parameter and buffer storages (to leave out of saved activations)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return {t.untyped_storage().data_ptr() for t in tensors}


def peak_memory(
    fn: Callable[[], object], device: torch.device, exclude: set[int] | None = None
) -> dict[str, float | None]:
    """Memory of one call of ``fn`` (a training step), in MiB.

    Args:
        fn: the call to measure.
        device: where it runs.
        exclude: storages not to count as saved activations (:func:`parameter_storages` of the model).

    Returns:
        ``peak_mib``: on CUDA the peak of allocated memory above what was allocated before the call
        (``torch.cuda.max_memory_allocated``); on CPU the peak resident set size above the one before
        (sampled every 2 ms from ``/proc/self/statm``; ``None`` where that file does not exist).
        ``saved_for_backward_mib``: distinct tensor storages autograd saved (activations kept for the
        backward pass), counted with ``saved_tensors_hooks``.
    """
    _release_free_memory()
    mib = 1024.0 ** 2
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with _saved_tensor_bytes(exclude or set()) as saved:
            fn()
        synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / mib
    else:
        with _rss_sampler() as rss, _saved_tensor_bytes(exclude or set()) as saved:
            fn()
        peak = None if rss["start"] is None else (rss["peak"] - rss["start"]) / mib
    return {"peak_mib": peak, "saved_for_backward_mib": saved["bytes"] / mib}
