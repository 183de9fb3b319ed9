"""The app in a window of its own: a native window (pywebview over Qt's web engine, an
optional dependency) on a machine with a display, else the default browser; nothing on a
headless machine. Closing the window ends the app: a running training job is saved at a
checkpoint first, after the user agreed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import webbrowser
from typing import Callable

from .locale import t

log = logging.getLogger("finetune_gui.window")

WIDTH, HEIGHT = 1360, 900


def has_display() -> bool:
    """Can a window be shown here? Always on macOS and Windows; on Linux only with an X or
    Wayland display (a server over SSH has none)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _webview():
    """pywebview with a working GUI backend, or None (not installed, or no backend)."""
    try:
        import webview
    except ImportError:
        return None
    if sys.platform.startswith("linux"):
        # Qt's web engine is Chromium, which refuses to run as root with its sandbox on
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
        if not _qt_starts():
            return None
    return webview


def _qt_starts() -> bool:
    """Qt ends the whole process when its display plugin cannot load (a missing xcb
    library), so it is tried in a child process first."""
    probe = "from qtpy.QtWidgets import QApplication; QApplication([])"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("no native window: Qt did not start (%s)", exc)
        return False
    if done.returncode != 0:
        log.warning("no native window: Qt did not start: %s", done.stderr.strip()[-500:])
    return done.returncode == 0


def open_window(url: str, *, lang: str, job_running: Callable[[], bool]) -> str:
    """Show ``url``: ``"window"`` when a native window was shown and has now been closed
    (this call blocks until then: GUI toolkits want the main thread), ``"browser"`` when the
    default browser was asked to open it, ``""`` when neither could be done."""
    webview = _webview()
    if webview is not None:
        try:
            window = webview.create_window(
                t("app.title", lang), url, width=WIDTH, height=HEIGHT, min_size=(900, 600),
                localization={"global.quitConfirmation": t("window.quit_running", lang),
                              "global.ok": t("window.quit", lang),
                              "global.quit": t("window.quit", lang),
                              "global.cancel": t("window.cancel", lang)})

            def closing():
                """Runs on the GUI thread as the window closes: ask first (the toolkit's
                own question, read after this) only while a job runs."""
                window.confirm_close = job_running()

            window.events.closing += closing
            webview.start(gui="qt" if sys.platform.startswith("linux") else None,
                          private_mode=False)   # the page keeps its visitor token
            return "window"
        except Exception as exc:   # no usable backend: say so and use the browser
            log.warning("no native window (%s); opening the browser instead", exc)
    try:
        return "browser" if webbrowser.open(url) else ""
    except webbrowser.Error:
        return ""
