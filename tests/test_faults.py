"""Faults during a run: kill -9, out of memory, NaN, a full disk. Nothing crashes, nothing is lost.

Each test uses a real mechanism where one exists here: SIGKILL on a real CLI process, an
address-space limit (RLIMIT_AS) that makes a real allocation fail, a real 24 MB tmpfs that
fills up. Only the NaN test injects its fault (see its docstring).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, kill_9_then_resume, write_jsonl
from finetune_gui.config import RunConfig
from finetune_gui.data import save_rows
from finetune_gui.errors import DataError
from finetune_gui.runs import RunPaths, read_metrics, read_state, remove_write_leftovers
from finetune_gui.training import TrainingJob

REMEDIES = ("Try a smaller train.batch_size (raise grad_accum to keep the effective batch), "
            "a shorter train.max_seq_len, train.gradient_checkpointing=true, or "
            "model.quantization=4bit")


def assert_checkpoint_intact(path: Path) -> None:
    """A checkpoint that resumes: state parses, adapter weights load and are finite."""
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["global_step"] == int(path.name.split("-")[1])
    weights = load_file(path / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    for name in ("optimizer.pt", "scheduler.pt"):
        assert (path / name).stat().st_size > 0


def assert_run_folder_readable(paths: RunPaths) -> None:
    """Every file the app reads parses; no temporary file of an atomic write is left."""
    RunConfig.load(paths.config)
    assert read_state(paths)["status"] in ("finished", "stopped", "failed", "running")
    for line in paths.metrics.read_text().splitlines():
        json.loads(line)
    leftovers = [p.name for p in paths.root.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


# ---- kill -9 mid-training, then resume ---------------------------------------------------------

def test_kill_9_mid_training_then_resume_finishes_with_a_continuous_curve(tiny_config, tmp_path):
    def mid_write_leftovers(paths: RunPaths) -> None:
        """What a kill during an atomic write leaves (it happens by chance; CI saw it once)."""
        (paths.root / ".state.json.il3jnwqw").write_text('{"status": "runn')
        (paths.root / ".plan.json.k2_9zq0a").write_text("")

    paths, _, resumed = kill_9_then_resume(tiny_config, tmp_path, wait_s=120,
                                           before_resume=mid_write_leftovers)
    assert "step 24/24" in resumed.stdout
    assert "removed .state.json.il3jnwqw" in resumed.stdout
    assert_run_folder_readable(paths)
    assert_checkpoint_intact(paths.latest_checkpoint())
    assert (paths.adapter / "adapter_model.safetensors").exists()


def test_only_an_atomic_writes_own_leftovers_are_removed(tmp_path):
    paths = RunPaths(tmp_path)
    names = {".state.json.ab_12cd3": True, ".run.yaml.zz9yy8xx": True,
             ".state.json.short": False, ".notes.txt.ab_12cd3": False, ".settings": False,
             "state.json.ab_12cd3": False}
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_write_leftovers(paths) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items()
                                                                if not gone)


def test_a_checkpoint_cut_short_is_never_resumed_from(tmp_path):
    """The Trainer writes trainer_state.json last and in place: a kill during that write
    leaves it truncated, a kill before it leaves it missing. Neither folder is picked."""
    paths = RunPaths(tmp_path)
    for step, state in ((4, '{"global_step": 4}'), (8, '{"global_step": 8, "log_hist'),
                        (12, None)):
        folder = paths.checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert paths.latest_checkpoint().name == "checkpoint-4"


# ---- out of memory ----------------------------------------------------------------------------

OOM_SCRIPT = r"""
import json, os, resource, sys
sys.path.insert(0, os.getcwd())
from pathlib import Path
from finetune_gui.config import RunConfig
from finetune_gui.training import TrainingJob
import datasets, peft, transformers  # loaded before the limit, like in a running app

model_dir, work = sys.argv[1], Path(sys.argv[2])
answer = " ".join(f"word{i}" for i in range(150))
rows = [{"instruction": f"Repeat {i}", "input": "", "output": answer} for i in range(64)]
(work / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

def config(name, batch):
    cfg = RunConfig()
    cfg.model.name_or_path = model_dir
    cfg.data.path, cfg.data.template = str(work / "long.jsonl"), "alpaca"
    cfg.lora.r = 4
    cfg.train.output_dir = str(work / name)
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.max_seq_len = 1, batch, 512
    cfg.train.precision = "fp32"
    return cfg

status = [line for line in open("/proc/self/status") if line.startswith("VmSize")][0]
limit = int(status.split()[1]) * 1024 + 1500 * 2**20     # 1.5 GiB more address space
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
big = TrainingJob(config("big", 64))                   # ~6 GB of logits: cannot fit
big.start()
big = big.wait()
small = TrainingJob(config("small", 1))                # the same process trains on
small.start()
small = small.wait()
print(json.dumps({"big": [big.status, big.message], "small": [small.status, small.message]}))
"""


def test_out_of_memory_fails_the_job_with_remedies_and_the_process_trains_on(
        tiny_model_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-c", OOM_SCRIPT, str(tiny_model_dir), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    status, message = result["big"]
    assert status == "failed"
    assert message.startswith("out of RAM (could not allocate ") and message.endswith(REMEDIES)
    assert read_state(RunPaths(tmp_path / "big"))["status"] == "failed"
    assert result["small"][0] == "finished", result["small"][1]


# ---- NaN / inf loss -------------------------------------------------------------------------

class _Poison:
    """Turns one LoRA weight into ``value`` at the end of step ``at``.

    No CPU fp32 run on the tiny model diverges by itself within a test's time (AdamW's
    normalised steps and the final RMSNorm keep the loss bounded; we tried lr 1.0 with
    alpha/r = 4096 and no clipping). So this injects what an fp16 overflow on a GPU does:
    a non-finite weight. Everything after it (the NaN loss, the guards, the checkpoints) is
    the real pipeline.
    """

    def __init__(self, at: int, value: float):
        from transformers import TrainerCallback
        poison = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step == poison.at:
                    with torch.no_grad():
                        name, weight = next((n, p) for n, p in model.named_parameters()
                                            if "lora_B" in n)
                        weight.view(-1)[0] = poison.value
        self.at, self.value, self.callback = at, value, Callback()


@pytest.mark.parametrize("poison_at, logging_steps, value, message", [
    (5, 1, math.nan, "loss became nan at step 6: training stopped, last good checkpoint kept. "
                     "Lower train.learning_rate or use precision fp32"),
    (5, 1, math.inf, "loss became nan at step 6: training stopped, last good checkpoint kept. "
                     "Lower train.learning_rate or use precision fp32"),
    # Not logged before the next save: the weight check at save time catches it.
    (6, 4, math.nan, "the LoRA weights became NaN/inf by step 8: training stopped, last good "
                     "checkpoint kept. Lower train.learning_rate or use precision fp32"),
], ids=["nan-logged", "inf-weight", "nan-between-logs"])
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
        tiny_config, poison_at, logging_steps, value, message):
    tiny_config.train.logging_steps = logging_steps
    poison = _Poison(poison_at, value)

    class Job(TrainingJob):
        def _build_trainer(self, *args):
            trainer = super()._build_trainer(*args)
            trainer.add_callback(poison.callback)
            return trainer

    state = Job(tiny_config).run()
    assert state.status == "failed"
    assert state.message == message
    paths = RunPaths(Path(tiny_config.train.output_dir))
    assert paths.latest_checkpoint().name == "checkpoint-4"
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["checkpoint-4"]
    assert_checkpoint_intact(paths.latest_checkpoint())
    assert not paths.adapter.exists()
    assert read_state(paths) | {"updated": 0} == {
        "status": "failed", "step": state.step, "total_steps": 12, "message": message,
        "updated": 0}
    assert all(math.isfinite(r["loss"]) for r in read_metrics(paths) if r["step"] <= 4)


# ---- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB tmpfs (needs root, as in this project's container), unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_full_disk_on_save_fails_clearly_and_keeps_the_previous_checkpoint(tiny_config, small_disk):
    tiny_config.train.output_dir = str(small_disk / "run")
    tiny_config.train.max_steps = 40
    paths = RunPaths(small_disk / "run")
    job = TrainingJob(tiny_config)
    job.start()
    while paths.latest_checkpoint() is None and job.state.active:
        time.sleep(0.02)
    filler = fill(small_disk)
    state = job.wait(timeout=300)
    assert state.status == "failed", state.message
    first = paths.latest_checkpoint()
    assert state.message == (
        f"disk full while writing to {paths.root}: the last complete checkpoint ({first.name}) "
        "is intact: free some space, then resume (or choose a train.output_dir on a disk with "
        "more room)")
    assert_checkpoint_intact(first)

    filler.unlink()
    resumed = TrainingJob(tiny_config, resume=True).run()
    assert resumed.status == "finished", resumed.message
    assert [s for s, _ in resumed.loss] == list(range(1, 41))
    assert_run_folder_readable(paths)


def test_dataset_save_on_a_full_disk_keeps_the_file_and_says_so(small_disk):
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(50)]
    path = write_jsonl(small_disk / "d.jsonl", rows)
    original = path.read_bytes()
    assert save_rows(path, rows[:10]) is not None            # saved, with a backup
    before = path.read_bytes()
    filler = fill(small_disk)
    with pytest.raises(DataError) as info:
        save_rows(path, rows + rows)
    assert str(info.value) == (
        f"{path}: could not save (No space left on device); the file on disk was left as it "
        "was and your edits are still here: free some space and save again")
    assert path.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir() if ".bak" in p.name).__len__() == 1
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".")], "temp file left"
    filler.unlink()
    backup = save_rows(path, rows + rows)
    assert backup.read_bytes() == before and len(path.read_text().splitlines()) == 100
    assert original != before
