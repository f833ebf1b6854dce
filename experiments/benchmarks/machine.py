"""Facts about the machine and library versions, the thread count, and the matmul peak.

The matmul peak is what ``torch.mm`` reaches on square matrices in the compute dtype with the same
threads as the training step; it is timed interleaved with the steps (:mod:`.timing`), so the
useful-FLOP fraction compares rates measured under the same load.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from importlib import metadata

import torch

PACKAGES = ("torch", "transformers", "peft", "lightning", "numpy")
"""Libraries whose versions are recorded."""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """Machine, OS, Python and library versions, thread settings and (on CUDA) the GPU.

    Returns:
        A JSON-ready dict.
    """
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    return info


def _probe(threads: int, repeats: int = 7) -> float:
    """Median seconds of a small step-like workload (matmul + element-wise) on ``threads`` threads."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1024, 576, generator=g), torch.randn(576, 1536, generator=g)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        y = x @ w
        y = torch.nn.functional.silu(y) * y
        (y.sum(-1) * 2).add_(1)
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def choose_threads(spec: str) -> tuple[int, dict]:
    """Set ``torch.set_num_threads`` from ``spec`` and return the count and how it was chosen.

    ``spec`` is a number, or ``auto``: the usable CPUs, unless a short probe runs faster on one
    thread (OpenMP threads that share cores with other busy processes wait on each other; on a busy
    2-core machine that made element-wise kernels up to 100x slower).

    Raises:
        ValueError: ``spec`` is neither ``auto`` nor a positive integer.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if spec != "auto":
        try:
            n = int(spec)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--threads={spec!r}: give a positive integer or auto")
        torch.set_num_threads(n)
        return n, {"mode": "fixed"}
    if usable <= 1:
        torch.set_num_threads(1)
        return 1, {"mode": "auto", "probe_s": None}
    probe = {usable: _probe(usable), 1: _probe(1)}
    n = usable if probe[usable] <= probe[1] else 1
    torch.set_num_threads(n)
    return n, {"mode": "auto", "probe_s": {str(k): v for k, v in probe.items()}}


def matmul_unit(
    device: torch.device, dtype: torch.dtype, n: int = 2048, count: int = 4
) -> tuple[Callable[[], object], float]:
    """A timed unit for the matmul peak: ``count`` products of square ``[n, n]`` matrices.

    Returns:
        ``(fn, flops)``: the callable and its FLOPs (``count x 2 n^3``).
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def fn() -> None:
        for _ in range(count):
            torch.mm(a, b, out=out)

    return fn, float(count) * 2.0 * n**3
