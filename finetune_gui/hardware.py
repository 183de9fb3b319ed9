"""What this machine has: CPU, RAM, GPUs and their free memory, and what it can compute in."""

from __future__ import annotations

import functools
import os
import platform
import threading
from dataclasses import dataclass, field

import psutil

from .messages import Message


@dataclass
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass
class HardwareInfo:
    cpu_name: str
    cpu_cores: int
    cpu_bf16: bool
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)

    def summary_lines(self) -> list[Message]:
        gib = 1024 ** 3
        lines = [Message("hw.cpu_bf16" if self.cpu_bf16 else "hw.cpu", name=self.cpu_name,
                         cores=self.cpu_cores),
                 Message("hw.ram", free=f"{self.ram_available_bytes / gib:.1f}",
                         total=f"{self.ram_total_bytes / gib:.1f}")]
        if not self.gpus:
            lines.append(Message("hw.no_gpu"))
        for gpu in self.gpus:
            lines.append(Message("hw.gpu", index=gpu.index, name=gpu.name,
                                 free=f"{gpu.free_bytes / gib:.1f}",
                                 total=f"{gpu.total_bytes / gib:.1f}"))
        return lines


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX-512 BF16 or AMX)."""
    flags = _cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def gpu_list() -> list[GpuInfo]:
    """The NVIDIA GPUs this process may use, numbered as torch numbers them.

    NVML counts every GPU in the box; ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) picks
    and reorders the ones torch sees, so the list follows it. Any NVML error, at start-up
    or later (a driver reset, a GPU that fell off the bus), falls back to torch's own
    ``mem_get_info``; an empty list means no usable GPU."""
    try:
        return _nvml_gpus()
    except Exception:  # NVML raises its own error types, at any call
        return _torch_gpus()


def _visible(entries: list[tuple[str, str]]) -> list[int]:
    """Positions in NVML's list (index, uuid) that CUDA_VISIBLE_DEVICES lets torch see."""
    wanted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if wanted is None:
        return list(range(len(entries)))
    chosen = []
    for item in (part.strip() for part in wanted.split(",")):
        if not item:
            break
        if item.isdigit():
            position = int(item)
            found = position if position < len(entries) else None
        else:
            found = next((i for i, (_, uuid) in enumerate(entries)
                          if uuid == item or uuid.startswith(item)), None)
        if found is None:  # CUDA ignores every device from the first unknown one
            break
        chosen.append(found)
    return chosen


def _nvml_gpus() -> list[GpuInfo]:
    try:
        import pynvml
    except ImportError:
        return _torch_gpus()
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: torch may still see a GPU (e.g. NVML missing in a container)
        return _torch_gpus()
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [pynvml.nvmlDeviceGetUUID(h) for h in handles]
        entries = [(str(i), u.decode() if isinstance(u, bytes) else u) for i, u in enumerate(uuids)]
        gpus = []
        for number, position in enumerate(_visible(entries)):
            handle = handles[position]
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GpuInfo(number, name.decode() if isinstance(name, bytes) else name,
                                int(mem.total), int(mem.free)))
        return gpus
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # shutting down a broken NVML must not hide the GPUs found
            pass


def _torch_gpus() -> list[GpuInfo]:
    """GPUs as torch sees them, where NVML cannot say."""
    import torch
    try:
        if not torch.cuda.is_available():
            return []
        gpus = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(GpuInfo(i, torch.cuda.get_device_name(i), int(total), int(free)))
        return gpus
    except Exception:  # a broken driver: no usable GPU
        return []


def detect() -> HardwareInfo:
    mem = psutil.virtual_memory()
    return HardwareInfo(
        cpu_name=_cpu_name(),
        cpu_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cpu_bf16=cpu_supports_bf16(),
        ram_total_bytes=int(mem.total),
        ram_available_bytes=int(mem.available),
        gpus=gpu_list(),
    )


def process_memory() -> dict[str, int]:
    """Resident memory of this process and, where CUDA is in use, the GPU's allocated peak."""
    out = {"rss_bytes": int(psutil.Process().memory_info().rss)}
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["vram_bytes"] = int(torch.cuda.memory_allocated())
            out["vram_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    except Exception:  # memory figures are informative only
        pass
    return out


BACKGROUND_NICENESS = 10


def lower_thread_priority(step: int = BACKGROUND_NICENESS) -> bool:
    """Make the calling thread, and the worker threads it starts later, yield the CPU.

    A training job in the app shares the cores with the page and chat; niced by ``step``
    it still takes every idle cycle but no longer slows the handlers. Linux keeps a nice
    value per thread (and new threads inherit it); elsewhere this does nothing.
    """
    if platform.system() != "Linux":
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except OSError:
        return False
    return True
