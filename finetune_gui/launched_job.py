"""A training run in several processes (``accelerate launch``), followed from its run folder.

The app cannot run DDP in its own process: each rank is a process. ``LaunchedJob`` starts
``accelerate launch … -m finetune_gui train`` as its own process group and builds the same
``JobState`` a ``TrainingJob`` gives from what rank 0 writes — ``state.json``, ``metrics.jsonl``
— and from the launcher's output (``launch.log`` in the run folder). Stop sends Ctrl-C to
rank 0, which or-reduces it over the ranks (every rank saves and stops after the same
step). With no GPU the ranks are CPU processes synchronising over gloo.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import runs
from .config import RunConfig
from .job_progress import JobState
from .launch import multi_gpu_command

LAUNCH_LOG = "launch.log"
LAUNCH_CONFIG = "launch.yaml"
ROOT = Path(__file__).resolve().parents[1]


class LaunchedJob:
    def __init__(self, config: RunConfig, *, resume: bool = False, gpus: str | None = None):
        self.config = config.copy()
        self.resume = resume
        self.processes = self.config.train.processes
        self.gpus = gpus              # CUDA_VISIBLE_DEVICES for the ranks (None: all)
        self.paths = runs.RunPaths(Path(self.config.train.output_dir))
        self._proc: subprocess.Popen | None = None
        self._started = 0.0
        self._stopping = False
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        """The launcher's argv: the command line the Train tab shows, run by this Python."""
        words = shlex.split(multi_gpu_command(str(self.paths.root / LAUNCH_CONFIG),
                                              num_processes=self.processes))
        argv = [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
        return argv + (["--resume"] if self.resume else [])

    def start(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        launch_config = self.config.copy()
        launch_config.train.processes = 1  # each rank trains in its own process
        launch_config.save(self.paths.root / LAUNCH_CONFIG)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        self._started = time.time()
        with open(self.paths.root / LAUNCH_LOG, "w", encoding="utf-8") as log:
            self._proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)

    def stop(self) -> None:
        """Ctrl-C to rank 0 (it tells the others); before the ranks exist, to the launcher."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        target = _rank_zero(proc.pid)
        try:
            if target is not None:
                os.kill(target, signal.SIGINT)
            else:
                os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> JobState:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.state

    @property
    def state(self) -> JobState:
        s = JobState(output_dir=str(self.paths.root), total_steps=self.config.train.max_steps)
        s.log = _tail(self.paths.root / LAUNCH_LOG)
        saved = runs.read_state(self.paths)
        fresh = saved.get("updated", 0) >= self._started
        for record in runs.read_metrics(self.paths) if fresh else []:
            if "loss" in record:
                s.loss.append((record["step"], record["loss"]))
            if "eval_loss" in record:
                s.eval_loss.append((record["step"], record["eval_loss"]))
            s.tokens_seen = record.get("tokens_seen", s.tokens_seen)
            s.elapsed_seconds = record.get("time", s.elapsed_seconds)
        if s.elapsed_seconds and s.tokens_seen:
            s.tokens_per_second = s.tokens_seen / s.elapsed_seconds
        if fresh:
            s.step, s.total_steps = saved.get("step", 0), saved.get("total_steps", 0)
            s.message = saved.get("message", "")
        running = self._proc is not None and self._proc.poll() is None
        status = saved.get("status") if fresh else None
        if running:
            s.status = "stopping" if self._stopping else ("running" if status == "running"
                                                          else "loading")
            s.phase = f"{self.processes} processes" if status == "running" else "launching"
        elif status in ("finished", "stopped", "failed"):
            s.status = status
        else:
            s.status = "failed" if self._proc is not None else "idle"
            s.message = s.message or _last_error(s.log) or "the launched processes exited"
        if s.step and s.total_steps and s.elapsed_seconds and s.status == "running":
            s.eta_seconds = s.elapsed_seconds / s.step * (s.total_steps - s.step)
        return s


def _rank_zero(launcher_pid: int) -> int | None:
    import psutil
    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            if child.environ().get("RANK") == "0" and "finetune_gui" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def _tail(path: Path, lines: int = 200) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _last_error(log: list[str]) -> str:
    for line in reversed(log):
        if line.startswith("error: ") or "Error" in line:
            return line.strip()[:300]
    return ""

