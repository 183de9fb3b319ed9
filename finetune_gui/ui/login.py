"""The login check for a shared app, with throttling: repeated wrong passwords for a user
lock that user out for a while (doubling up to a cap), so a password cannot be guessed at
thousands of tries a second. Gradio calls the guard as its ``auth`` function.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time

log = logging.getLogger("finetune_gui.login")


class LoginGuard:
    FREE_TRIES = 5           # wrong passwords allowed before a lock
    FIRST_LOCK_S = 30.0
    MAX_LOCK_S = 900.0
    MAX_TRACKED = 10_000     # distinct user names remembered (bounded memory)

    def __init__(self, users: list[tuple[str, str]], clock=time.monotonic):
        self._users = dict(users)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}

    def __call__(self, username: str, password: str) -> bool:
        name = str(username)[:200]
        with self._lock:
            until = self._locked_until.get(name, 0.0)
            if self._clock() < until:
                return False          # locked: even the right password waits
        expected = self._users.get(name)
        ok = expected is not None and hmac.compare_digest(
            str(password).encode("utf-8"), expected.encode("utf-8"))
        with self._lock:
            if ok:
                self._failures.pop(name, None)
                self._locked_until.pop(name, None)
                return True
            if len(self._failures) >= self.MAX_TRACKED and name not in self._failures:
                self._failures.clear()
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            if failures >= self.FREE_TRIES:
                seconds = min(self.MAX_LOCK_S,
                              self.FIRST_LOCK_S * 2 ** (failures - self.FREE_TRIES))
                self._locked_until[name] = self._clock() + seconds
                log.warning("login: %d wrong passwords for one user name: locked for %.0f s",
                            failures, seconds)
        return False

    def locked_for(self, username: str) -> float:
        """Seconds until ``username`` may try again (0: not locked)."""
        with self._lock:
            return max(0.0, self._locked_until.get(username, 0.0) - self._clock())
