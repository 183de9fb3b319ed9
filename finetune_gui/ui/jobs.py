"""The one training job of this server, shared on purpose by every browser session.

Training uses the whole machine, so there is one job at a time. It lives here, on the
server, not in a page: any page load finds it again (reload = re-attach), closing the
browser does not touch it, and a second Start while it runs is refused with a message.

A job has an owner: the visitor that started it (the login user, or the browser when there
is no login). When the app is shared, only its owner may stop it or resume its run folder;
everyone else watches read-only. The owner is kept beside the run (as a hash) so that
Resume stays theirs after a server restart.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ..config import RunConfig
from ..errors import FinetuneError
from ..job_progress import JobState
from ..launched_job import LaunchedJob
from ..messages import Message
from ..training import JobBusyError, TrainingJob

OWNER_FILE = "owner"


class NotYourJob(FinetuneError):
    """A visitor tried to control a job or run folder another visitor started."""


def owner_key(visitor: str) -> str:
    """What is stored for a visitor: a hash, never the browser token itself."""
    return hashlib.sha256(visitor.encode("utf-8")).hexdigest()[:32]


def run_owner(run_dir: str | Path) -> str | None:
    """The stored owner key of a run folder (None: any visitor, e.g. a CLI run)."""
    try:
        return (Path(run_dir) / OWNER_FILE).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def start_job(config: RunConfig, *, resume: bool = False):
    """A job in this process, or several processes (``train.processes``) launched and
    followed from the run folder."""
    if config.train.processes > 1:
        return LaunchedJob(config, resume=resume)
    return TrainingJob(config, resume=resume)


class JobRegistry:
    def __init__(self, job_factory=start_job, *, owners: bool = False):
        self._lock = threading.Lock()
        self._job: TrainingJob | None = None
        self._owner = ""                     # owner_key of the job's visitor
        self._factory = job_factory
        self.owners = owners                 # enforce owners (the app is shared)
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

    def start(self, config: RunConfig, *, resume: bool = False, visitor: str = "") -> TrainingJob:
        """Start a job for ``config`` owned by ``visitor``; ``JobBusyError`` while another
        one is active, ``NotYourJob`` when resuming a run folder another visitor owns."""
        with self._lock:
            if self.busy():
                raise JobBusyError(Message("train.busy_server", path=self._job.state.output_dir))
            out = Path(config.train.output_dir)
            stored = run_owner(out)
            if resume and self.owners and stored not in (None, owner_key(visitor)):
                raise NotYourJob(Message("train.not_yours", name=out.name))
            job = self._factory(config, resume=resume)
            job.start()     # raises JobBusyError if a job outside this registry holds the lock
            self._job, self._owner = job, owner_key(visitor)
            if self.owners and not stored:
                try:
                    out.mkdir(parents=True, exist_ok=True)
                    (out / OWNER_FILE).write_text(self._owner + "\n", encoding="ascii")
                except OSError:
                    pass   # the job reports an unwritable folder itself
            return job

    def owned_by(self, visitor: str) -> bool:
        """May ``visitor`` control the current job? Always, unless owners are enforced."""
        return not self.owners or self._job is None or self._owner == owner_key(visitor)

    def stop(self, visitor: str = "") -> bool:
        """Ask the running job to checkpoint and stop; False when nothing runs,
        ``NotYourJob`` when it belongs to another visitor."""
        job = self._job
        if job is None or not job.state.active:
            return False
        if not self.owned_by(visitor):
            raise NotYourJob(Message("train.not_yours_stop"))
        job.stop()
        return True

    def shutdown(self, timeout: float = 900) -> JobState | None:
        """The app is closing (its window was closed by the person at this machine): stop
        the running job, whoever started it, and wait until its checkpoint is saved. The
        job's state then, or None when nothing ran."""
        job = self._job
        if job is None or not job.state.active:
            return None
        job.stop()
        return job.wait(timeout)

    def note_finished(self, output_dir: str) -> None:
        if output_dir and output_dir not in self.finished_dirs:
            self.finished_dirs.append(output_dir)
