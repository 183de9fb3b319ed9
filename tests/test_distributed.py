"""Two processes through ``accelerate launch`` on the CPU: DDP over gloo, one run folder.

The command is exactly the one ``multi_gpu_command`` gives the Train tab (the DDP preset in
presets/accelerate/). With no GPU visible, accelerate's multi-GPU launcher (torchrun) starts
CPU processes that synchronise gradients over gloo. (``accelerate launch --cpu
--num_processes 2`` would start a single process unless an MPI hostfile is given.)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from conftest import ROOT
from finetune_gui.launch import multi_gpu_command
from finetune_gui.runs import RunPaths, read_metrics


def test_two_process_launch_trains_once_and_saves_one_adapter(tiny_config, tmp_path):
    tiny_config.save(tmp_path / "tiny.yaml")
    command = multi_gpu_command(str(tmp_path / "tiny.yaml"), num_processes=2)
    words = shlex.split(command)
    assert words[:2] == ["accelerate", "launch"]
    argv = [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.time()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    print(f"\ntwo-process launch took {time.time() - started:.0f}s")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    # Both processes trained: rank 1 reports, rank 0 prints the progress.
    assert "process 1/2: finished" in proc.stdout, proc.stdout
    assert "finished: finished 12 steps" in proc.stdout

    paths = RunPaths(tmp_path / "run")
    records = [r for r in read_metrics(paths) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 13)), "one line per step: rank 0 only"
    # 24 rows, batch 4 per process, 2 processes: 3 steps per epoch (one process would need 6).
    assert records[-1]["epoch"] == 4.0
    losses = [r["loss"] for r in records]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses

    adapters = [p for p in (tmp_path / "run").rglob("adapter_model.safetensors")
                if "checkpoints" not in p.parts]
    assert adapters == [paths.adapter / "adapter_model.safetensors"]
    assert json.loads(paths.state.read_text())["status"] == "finished"
    assert (paths.adapter / "run.yaml").exists() and (paths.root / "loss.png").exists()
    assert len(list((paths.root / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_stop_on_rank_0_stops_every_rank_after_the_same_step(tiny_config, tmp_path):
    """Ctrl-C reaches the process that shows progress (rank 0); the other ranks must stop
    after the same step, or they wait for ever in the next gradient all-reduce."""
    import signal

    import psutil
    tiny_config.set("train.max_steps", 400)
    tiny_config.set("train.save_steps", 1000)
    tiny_config.save(tmp_path / "tiny.yaml")
    words = shlex.split(multi_gpu_command(str(tmp_path / "tiny.yaml"), num_processes=2))
    argv = [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    paths = RunPaths(tmp_path / "run")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any(r.get("step", 0) >= 3
                                                  for r in read_metrics(paths)):
            time.sleep(0.5)
        rank0 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "finetune_gui" in " ".join(p.cmdline()) and p.environ().get("RANK") == "0"]
        assert len(rank0) == 1, "rank 0 not found"
        rank0[0].send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    state = json.loads(paths.state.read_text())
    assert state["status"] == "stopped" and state["step"] < 400, state
    assert f"process 1/2: stopped: stopped at step {state['step']}/" in out, out[-2000:]
    assert paths.latest_checkpoint() is not None


def test_the_app_launches_two_processes_and_follows_the_run(tiny_config, tmp_path, monkeypatch):
    """train.processes = 2 from the app (its job registry): accelerate launch in its own
    process group, progress read from the run folder, Stop reaching every rank."""
    from finetune_gui.ui.jobs import JobRegistry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")   # CPU ranks over gloo
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny_config.set("train.processes", 2)
    tiny_config.set("train.max_steps", 400)
    tiny_config.set("train.save_steps", 1000)
    registry = JobRegistry()
    job = registry.start(tiny_config, visitor="a")
    assert registry.busy()
    deadline = time.time() + 300
    while time.time() < deadline and job.state.step < 3:
        assert job.state.status in ("loading", "running"), job.state.log[-20:]
        time.sleep(0.5)
    state = job.state
    assert state.status == "running" and state.loss, state.log[-20:]
    assert state.phase == "2 processes"
    assert registry.stop("a")
    final = job.wait(180)
    assert final.status == "stopped", (final.message, final.log[-20:])
    assert 3 <= final.step < 400
    assert any("process 1/2: stopped" in line for line in final.log), final.log[-20:]
    paths = RunPaths(tmp_path / "run")
    assert paths.latest_checkpoint() is not None
    assert (paths.adapter / "adapter_model.safetensors").exists()
    assert not registry.busy()
