"""4- and 5-bit GGUF (q4_k_m, q5_k_m) made by llama.cpp's own quantizer.

The gguf package writes f16/q8_0 itself but cannot make k-quants (its Q4_K/Q5_K only
dequantise), so these go through ``llama_model_quantize`` from llama-cpp-python, the
well-kept binding that builds llama.cpp from source: the same code as llama.cpp's
``llama-quantize`` tool, including its mixes (q4_k_m keeps some tensors at q6_k) and its
fallbacks for rows that are not a multiple of 256 wide. It is an optional extra
(``pip install llama-cpp-python``, or ``scripts/setup.sh --test``): without it these types
are refused before any merge, with that command.
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from pathlib import Path

from ..errors import FinetuneError
from ..messages import Message

K_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}
INSTALL = "pip install llama-cpp-python (builds llama.cpp with the system's C++ compiler)"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp if hasattr(llama_cpp, "llama_model_quantize") else None


def check_quantizer(kind: str) -> None:
    """Refuse a k-quant when llama.cpp's quantizer is not installed (before any merge)."""
    if kind in K_QUANTS and _llama_cpp() is None:
        raise FinetuneError(Message("export.no_quantizer", kind=kind, install=INSTALL))


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet_log(level, text, user_data):  # llama.cpp prints a line per tensor otherwise
    return None


def quantize_gguf(source: Path, dest: Path, kind: str) -> dict:
    """Quantise a 16-bit GGUF file into ``dest`` with llama.cpp; the tensor types it chose."""
    lib = _llama_cpp()
    if lib is None:
        check_quantizer(kind)
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, K_QUANTS[kind])
    params.nthread = os.cpu_count() or 1
    lib.llama_log_set(_quiet_log, None)
    code = lib.llama_model_quantize(str(source).encode(), str(dest).encode(),
                                    ctypes.byref(params))
    if code != 0 or not dest.is_file():
        raise FinetuneError(Message("export.quantize_failed", name=source.name, kind=kind,
                                    code=code))
    return tensor_types(dest)


def tensor_types(path: Path) -> dict:
    """How many tensors of each type a GGUF file holds, e.g. {"q4_K": 120, "f32": 61}."""
    import gguf
    reader = gguf.GGUFReader(path)
    return dict(Counter(t.tensor_type.name.lower().replace("_k", "_K")
                        for t in reader.tensors))


def open_in_llama_cpp(path: Path, **kwargs):
    """A GGUF file loaded in llama.cpp to check it (``llama_cpp.Llama``), without llama.cpp's
    weight-repacking buffers: with them, llama-cpp-python 0.3.36 crashes the process
    (SIGSEGV) evaluating k-quant files on a CPU with AMX — seen on this project's Xeon, for
    files llama.cpp's own quantizer wrote. The numbers are the same; only the layout differs."""
    lib = _llama_cpp()
    if lib is None:
        raise FinetuneError(Message("export.no_llama_cpp", install=INSTALL))
    import sys
    binding = sys.modules["llama_cpp.llama_cpp"]
    defaults = binding.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    binding.llama_model_default_params = without_repacking
    try:
        return lib.Llama(model_path=str(path), **kwargs)
    finally:
        binding.llama_model_default_params = defaults
