"""`python app.py --share` without internet: says so, prints a password, serves locally with a
login; a window opens only where there is a display."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.browser.conftest import free_port, start_app, stop_app, wait_for_line


def _status(url: str, data: dict | None = None, headers: dict | None = None) -> int:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_share_without_internet_keeps_serving_locally_behind_a_login(tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    # An unroutable proxy makes sure no share tunnel can be made even where there is internet.
    proc = start_app(["--share", "--port", str(port), "--runs-dir", str(tmp_path / "runs")], log,
                     {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                      "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                      "FINETUNE_GUI_AUTH": ""})
    try:
        wait_for_line(log, "Press Ctrl+C to stop", proc, timeout=180)
        out = log.read_text(encoding="utf-8")
        assert "public share link could not be made" in out
        assert "still serving locally" in out
        password = re.search(r"generated password: (\S+)", out).group(1)
        assert len(password) >= 12

        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/", timeout=30) as response:   # login page
            assert response.status == 200
            assert '"auth_required":true' in response.read().decode()
        assert _status(base + "/config") == 401                              # API refused
        assert _status(base + "/gradio_api/info") == 401
        assert _status(base + "/login", {"username": "finetune", "password": "wrong"}) == 400
        assert _status(base + "/login", {"username": "finetune", "password": password}) == 200
    finally:
        stop_app(proc)


def test_auth_argument_is_checked():
    import app
    assert app.parse_auth("ann:secret") == ("ann", "secret")
    assert app.parse_auth(None) is None
    for bad in ("nocolon", ":pw", "user:"):
        try:
            app.parse_auth(bad)
        except SystemExit as exc:
            assert "USER:PASS" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


@pytest.mark.parametrize("env, shown", [({}, False), ({"DISPLAY": ":0"}, True),
                                        ({"WAYLAND_DISPLAY": "wayland-0"}, True)])
def test_a_window_opens_only_where_there_is_a_display(monkeypatch, env, shown):
    """On Linux a server without X or Wayland (SSH, CI) only serves, as before."""
    from finetune_gui.ui import window
    monkeypatch.setattr(window.sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert window.has_display() is shown
