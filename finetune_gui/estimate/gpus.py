"""GPUs to estimate for: the one in this machine (NVML) or a common card chosen by name."""

from __future__ import annotations

import functools

from ..hardware import GpuInfo, gpu_list

MIB = 2 ** 20

# Total memory as nvidia-smi reports it for each card (MiB), i.e. what is left after ECC and the
# driver's reservations — the T4 sold as "16 GB" shows 15,360 MiB. The CUDA context comes out of
# this; the estimate counts it separately (memory.CUDA_CONTEXT_BYTES).
COMMON_GPUS: dict[str, int] = {
    "RTX 3060 12GB": 12_288 * MIB,
    "RTX 4070 12GB": 12_282 * MIB,
    "T4 16GB": 15_360 * MIB,
    "V100 16GB": 16_160 * MIB,
    "RTX 4060 Ti 16GB": 16_380 * MIB,
    "RTX 4080 16GB": 16_376 * MIB,
    "A10G 24GB": 23_028 * MIB,
    "L4 24GB": 23_034 * MIB,
    "RTX 3090 24GB": 24_576 * MIB,
    "RTX 4090 24GB": 24_564 * MIB,
    "A100 40GB": 40_960 * MIB,
    "L40S 48GB": 46_068 * MIB,
    "RTX A6000 48GB": 49_140 * MIB,
    "A100 80GB": 81_920 * MIB,
    "H100 80GB": 81_559 * MIB,
    "H200 141GB": 143_771 * MIB,
}


@functools.lru_cache(maxsize=1)
def detected_gpu() -> GpuInfo | None:
    """The first NVIDIA GPU in this machine (asked once per process), or None."""
    gpus = gpu_list()
    return gpus[0] if gpus else None


def gpu_bytes_for(name: str) -> int:
    """Memory of a card from COMMON_GPUS, by exact or case-insensitive partial name."""
    if name in COMMON_GPUS:
        return COMMON_GPUS[name]
    hits = [k for k in COMMON_GPUS if name.lower().replace(" ", "") in k.lower().replace(" ", "")]
    if len(hits) == 1:
        return COMMON_GPUS[hits[0]]
    from ..errors import ConfigError
    raise ConfigError(f"unknown GPU '{name}'" + (f" (matches {', '.join(hits)})" if hits else "")
                      + f"; known: {', '.join(COMMON_GPUS)}")
