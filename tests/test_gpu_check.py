"""bench/gpu_check.py: the prepared GPU check runs end to end (tiny shape on the CPU here,
the 7B shape under the ``gpu`` marker on a CUDA machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def run_check(*args: str, timeout: int) -> list[dict]:
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_gpu_check_script_runs_on_the_tiny_shape():
    lines = run_check("--shape", "tiny", "--steps", "4", "--seq-len", "64",
                      "--variants", "all,off", "--export", timeout=600)
    runs = [line for line in lines if "variant" in line]
    assert [r["variant"] for r in runs] == ["speedups=all", "speedups=off"]
    for run in runs:
        assert run["status"] == "finished", run
        assert run["tokens_per_second"] > 0 and run["estimate_gib"] > 0
        assert len(run["losses"]) == 4
    # the same start (LoRA B = 0); the dropout masks differ between the two paths afterwards
    assert runs[0]["losses"][0] == pytest.approx(runs[1]["losses"][0], rel=1e-4)
    assert {line["export"] for line in lines if "export" in line} == {"merged", "gguf f16"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_check_7b_shape_fits_its_estimate():
    lines = run_check("--steps", "6", timeout=900)
    runs = [line for line in lines if "variant" in line]
    assert runs and all(r["status"] == "finished" for r in runs), runs
    for run in runs:
        assert abs(run["estimate_error"]) < 0.25, run
