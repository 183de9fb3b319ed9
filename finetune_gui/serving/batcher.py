"""Answer many chat requests at once.

Requests wait in one queue; a worker thread takes the oldest and every waiting request
that decodes alike (same sampling settings, adapter on or off) into one left-padded batch
of ``ChatEngine.generate_batch``. On a CPU a batch of 8 costs little more per step than
one answer (the weights are read once per step for all rows), so concurrent clients are
answered together instead of one after another. A request alone is generated exactly as
``chat`` generates it (no padding), so greedy answers are identical.

Each row is followed token by token from a stopping criterion: its text is decoded, pieces
are handed to the request's ``emit`` callback as they become safe to send, and the row
ends at an end-of-turn token, a stop string, its own ``max_tokens``, its deadline, or when
its client has gone away (the batch goes on for the others).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria

from ..config import GenerationConfig
from ..generation import sampling_kwargs
from .protocol import AnswerText, ApiError

Emit = Callable[[dict], None]


@dataclass
class Job:
    """One request's generation: its prompt, settings, and where its events go.

    ``emit`` receives ``{"piece": text}`` while the answer grows, then exactly one of
    ``{"finish": "stop" | "length", "completion_tokens": n}`` or ``{"error": message}``."""
    prompt_ids: list[int]
    params: GenerationConfig
    stops: list[str]
    use_adapter: bool
    emit: Emit
    deadline: float
    abandoned: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None

    def __post_init__(self):
        self.answer = AnswerText(self.stops)

    def group(self) -> tuple:
        """Requests with the same key can share a batch."""
        knobs = sampling_kwargs(self.params)
        knobs.pop("max_new_tokens")
        return (self.use_adapter, tuple(sorted(knobs.items())))


class RowFollower(StoppingCriteria):
    """Follows every row of a batch after each new token; says which rows are done."""

    def __init__(self, jobs: list[Job], tokenizer, stop_ids: list[int]):
        self.jobs, self.tokenizer, self.stop_ids = jobs, tokenizer, set(stop_ids)

    def __call__(self, input_ids, scores, **kwargs):
        newest = input_ids[:, -1].tolist()
        now = time.monotonic()
        for job, token in zip(self.jobs, newest):
            if job.finish is not None:
                continue
            if token in self.stop_ids:
                self.end(job, "stop")
                continue
            job.tokens.append(token)
            piece, stopped = job.answer.update(self.decode(job))
            if piece:
                job.emit({"piece": piece})
            if stopped:
                self.end(job, "stop")
            elif len(job.tokens) >= job.params.max_new_tokens or job.abandoned.is_set() \
                    or now > job.deadline:
                self.end(job, "length")
        return torch.tensor([job.finish is not None for job in self.jobs],
                            device=input_ids.device)

    def decode(self, job: Job) -> str:
        return self.tokenizer.decode(job.tokens, skip_special_tokens=True)

    def end(self, job: Job, finish: str) -> None:
        job.finish = finish
        piece = job.answer.finish(self.decode(job))
        if piece:
            job.emit({"piece": piece})
        job.emit({"finish": finish, "completion_tokens": len(job.tokens)})


class Batcher:
    """The queue in front of one ``ChatEngine`` and the thread that empties it."""

    def __init__(self, engine, *, max_batch: int = 8, max_waiting: int = 64):
        self.engine, self.max_batch, self.max_waiting = engine, max_batch, max_waiting
        self._waiting: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self.batches = 0          # how many generate calls ran, and how many rows they held
        self.rows = 0
        self._thread = threading.Thread(target=self._loop, name="serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a request, or refuse it (429) when the queue is full."""
        with self._ready:
            if self._closed:
                raise ApiError(503, "the server is shutting down", kind="server_error")
            if len(self._waiting) >= self.max_waiting:
                raise ApiError(429, f"the server is busy ({self.max_waiting} requests waiting); "
                               "retry shortly", kind="rate_limit_error", code="server_busy")
            self._waiting.append(job)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            for job in self._waiting:
                job.emit({"error": "the server is shutting down"})
            self._waiting.clear()
            self._ready.notify_all()
        self._thread.join(timeout=30)

    def _next_batch(self) -> list[Job]:
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return []
            key = self._waiting[0].group()
            batch = [j for j in self._waiting if j.group() == key][:self.max_batch]
            for job in batch:
                self._waiting.remove(job)
        return [job for job in batch if not job.abandoned.is_set()]

    def _loop(self) -> None:
        while not self._closed:
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        params = max((job.params for job in batch), key=lambda p: p.max_new_tokens)
        follower = RowFollower(batch, self.engine.tokenizer, self.engine.stop_ids)
        self.batches += 1      # counted first: a row's client gets its answer before generate returns
        self.rows += len(batch)
        try:
            self.engine.generate_batch([job.prompt_ids for job in batch], params,
                                       use_adapter=batch[0].use_adapter,
                                       stopping_criteria=[follower])
        except Exception as exc:  # reported to every client of the batch; the server goes on
            message = f"generation failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
            for job in batch:
                if job.finish is None:
                    job.finish = "error"
                    job.emit({"error": message})
            return
        for job in batch:
            if job.finish is None:   # generate ended first (its own length limit)
                follower.end(job, "length")
