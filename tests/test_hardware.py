"""GPU discovery without a GPU: NVML failing at any call, and CUDA_VISIBLE_DEVICES.

NVML is replaced by a stand-in module (this machine has no NVIDIA driver); everything
else is the real code path."""

from __future__ import annotations

import sys
import types

import pytest

from finetune_gui import hardware

GIB = 2 ** 30


def fake_nvml(monkeypatch, names, fail_at: str | None = None):
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def call(name, fn):
        def wrapped(*args):
            if name == fail_at:
                raise NVMLError(f"{name}: GPU is lost")
            return fn(*args)
        return wrapped

    memory = types.SimpleNamespace
    module.nvmlInit = call("nvmlInit", lambda: None)
    module.nvmlShutdown = call("nvmlShutdown", lambda: None)
    module.nvmlDeviceGetCount = call("nvmlDeviceGetCount", lambda: len(names))
    module.nvmlDeviceGetHandleByIndex = call("nvmlDeviceGetHandleByIndex", lambda i: i)
    module.nvmlDeviceGetUUID = call("nvmlDeviceGetUUID", lambda h: f"GPU-{h}aaaa-{names[h]}")
    module.nvmlDeviceGetName = call("nvmlDeviceGetName", lambda h: names[h].encode())
    module.nvmlDeviceGetMemoryInfo = call("nvmlDeviceGetMemoryInfo",
                                          lambda h: memory(total=(h + 1) * GIB, free=GIB // 2))
    monkeypatch.setitem(sys.modules, "pynvml", module)


@pytest.mark.parametrize("visible,want", [
    (None, ["A", "B", "C"]),
    ("2,0", ["C", "A"]),            # torch's cuda:0 is NVML's GPU 2
    ("1,7,2", ["B"]),               # CUDA stops at the first unknown device
    ("GPU-2aaaa", ["C"]),           # a UUID prefix
    ("", []),                       # no GPU visible at all
])
def test_gpu_list_follows_cuda_visible_devices(monkeypatch, visible, want):
    fake_nvml(monkeypatch, ["A", "B", "C"])
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = hardware.gpu_list()
    assert [g.name for g in gpus] == want
    assert [g.index for g in gpus] == list(range(len(want)))


@pytest.mark.parametrize("fail_at", ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetUUID",
                                     "nvmlDeviceGetMemoryInfo", "nvmlShutdown"])
def test_an_nvml_error_after_start_up_never_crashes(monkeypatch, fail_at):
    fake_nvml(monkeypatch, ["A", "B"], fail_at=fail_at)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = hardware.gpu_list()  # falls back to torch, which sees no GPU on this machine
    if fail_at == "nvmlShutdown":
        assert [g.name for g in gpus] == ["A", "B"]
    else:
        assert gpus == []
    assert hardware.detect().summary_lines()  # the Model tab's machine panel still draws
