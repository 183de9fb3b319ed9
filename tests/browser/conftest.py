"""Fixtures for browser tests: the real app server (a subprocess) and headless Chromium.

Chromium is Debian's (``apt-get install chromium``; for readable screenshots also
``fonts-noto-cjk fonts-noto-color-emoji``) driven by the Playwright package from PyPI
through ``executable_path`` — no Playwright browser download is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Tests never write tracked files: the README's screenshots are refreshed on purpose with
# FINETUNE_GUI_SCREENSHOTS=docs/screenshots; otherwise they go to an untracked folder.
SCREENSHOTS = Path(os.environ.get("FINETUNE_GUI_SCREENSHOTS") or ROOT / "bench" / "out" /
                   "screenshots")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        content = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if text in content:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{content[-3000:]}")
        time.sleep(0.3)
    raise TimeoutError(f"'{text}' not printed within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def start_app(args: list[str], log: Path, env_extra: dict | None = None,
              cwd: Path = ROOT, window: bool = False) -> subprocess.Popen:
    """``python app.py ARGS``; ``cwd`` is its workspace (presets/, data/uploads/). Without
    ``window`` it only serves, even where a display would let it open a window."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "app.py"), *args,
                                 *([] if window else ["--no-window"])], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def app_server(tiny_model_dir, tmp_path_factory):
    """``python app.py --model <tiny llama>`` on a free port; yields (url, runs dir)."""
    work = tmp_path_factory.mktemp("browser-app")
    runs = work / "runs"
    port = free_port()
    log = work / "app.log"
    proc = start_app(["--model", str(tiny_model_dir), "--port", str(port),
                      "--runs-dir", str(runs)], log)
    try:
        wait_for_line(log, "Running on local URL", proc, timeout=180)
        yield f"http://127.0.0.1:{port}/", runs, log
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium "
                    "(apt-get install chromium; the setup script does this)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage"])
    try:
        yield chromium
    finally:
        chromium.close()
        pw.stop()
