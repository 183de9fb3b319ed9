"""The one training job of this server, shared on purpose by every browser session.

Training uses the whole machine, so there is one job at a time. It lives here, on the
server, not in a page: any page load finds it again (reload = re-attach), closing the
browser does not touch it, and a second Start while it runs is refused with a message.
"""

from __future__ import annotations

import threading

from ..config import RunConfig
from ..job_progress import JobState
from ..training import JobBusyError, TrainingJob


class JobRegistry:
    def __init__(self, job_factory=TrainingJob):
        self._lock = threading.Lock()
        self._job: TrainingJob | None = None
        self._factory = job_factory
        self.finished_dirs: list[str] = []   # run folders this server trained, newest last

    @property
    def current(self) -> TrainingJob | None:
        return self._job

    def state(self) -> JobState | None:
        job = self._job
        return job.state if job is not None else None

    def busy(self) -> bool:
        state = self.state()
        return bool(state and state.active)

    def start(self, config: RunConfig, *, resume: bool = False) -> TrainingJob:
        """Start a job for ``config``; ``JobBusyError`` while another one is active."""
        with self._lock:
            if self.busy():
                raise JobBusyError(
                    "a training job is already running on this server "
                    f"({self._job.state.output_dir}): wait for it or stop it first")
            job = self._factory(config, resume=resume)
            job.start()     # raises JobBusyError if a job outside this registry holds the lock
            self._job = job
            return job

    def stop(self) -> bool:
        """Ask the running job to checkpoint and stop; False when nothing runs."""
        job = self._job
        if job is None or not job.state.active:
            return False
        job.stop()
        return True

    def note_finished(self, output_dir: str) -> None:
        if output_dir and output_dir not in self.finished_dirs:
            self.finished_dirs.append(output_dir)
