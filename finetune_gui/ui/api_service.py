"""The app's one OpenAI-compatible API server, started and stopped from the Export tab.

Like the training job it belongs to the whole app, not to a page: a reload finds it again.
It always requires a key (made up at start, shown to whoever started it); when the app is
shared, only that visitor sees the key and may stop it, everyone else sees that it runs.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import FinetuneError
from ..messages import Message
from ..serving.http import BackgroundServer
from ..serving.server import ModelServer, client_snippet, load_engine
from .jobs import NotYourJob, owner_key


@dataclass
class ApiStatus:
    running: bool
    url: str = ""
    models: tuple[str, ...] = ()
    key: str | None = None          # None: not this visitor's to see
    source: str = ""


class ApiService:
    def __init__(self, host: str = "127.0.0.1", *, owners: bool = False):
        self.host, self.owners = host, owners
        self._lock = threading.Lock()
        self._background: BackgroundServer | None = None
        self._owner, self._key, self._source = "", "", ""

    def start(self, run_root: Path, port: int, visitor: str, label: str) -> ApiStatus:
        if not isinstance(port, (int, float)) or not 1024 <= int(port) <= 65535:
            raise FinetuneError(Message("api.port", got=repr(port)))
        with self._lock:
            if self._background is not None and self._background.running:
                raise FinetuneError(Message("api.busy", source=self._source))
            engine, name = load_engine(run_root)
            key = "sk-" + secrets.token_urlsafe(24)
            self._background = BackgroundServer(ModelServer(engine, name, api_key=key),
                                                self.host, int(port)).start()
            self._owner, self._key, self._source = owner_key(visitor), key, label
        return self.status(visitor)

    def stop(self, visitor: str) -> bool:
        with self._lock:
            background = self._background
            if background is None or not background.running:
                return False
            if self.owners and self._owner != owner_key(visitor):
                raise NotYourJob(Message("api.not_yours"))
            background.stop()
            self._background = None
        return True

    def status(self, visitor: str) -> ApiStatus:
        background = self._background
        if background is None or not background.running:
            return ApiStatus(False)
        mine = not self.owners or self._owner == owner_key(visitor)
        return ApiStatus(True, background.base_url, tuple(background.server.model_ids),
                         self._key if mine else None, self._source)

    def snippet(self, status: ApiStatus) -> str:
        if not status.running:
            return ""
        return client_snippet(status.url, status.models[0], status.key or "ASK-THE-OWNER")

    def close(self) -> None:
        with self._lock:
            if self._background is not None:
                self._background.stop()
                self._background = None
