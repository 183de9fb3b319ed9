"""Settings that survive: a visitor's edits (and language) come back after a page reload and
after the app is restarted; another browser starts from the preset; "Reset to preset"
goes back to it; the model loaded last is offered again in the Recent picker."""

from __future__ import annotations

import time

import pytest

from .conftest import free_port, start_app, stop_app, wait_for_line
from .test_wizard import TIMEOUT_MS, fill, open_tab, wait_text

pytestmark = pytest.mark.browser


def _serve(work, model_dir, port):
    log = work / f"app-{port}.log"
    proc = start_app(["--model", str(model_dir), "--port", str(port),
                      "--runs-dir", str(work / "runs")], log, cwd=work)
    wait_for_line(log, "Running on local URL", proc, timeout=180)
    return proc


def _loaded(page):
    page.wait_for_selector("body.fg-ready", state="attached", timeout=TIMEOUT_MS)
    wait_text(page, "#hardware", r"\S")


def _settings_files(work) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8")
            for p in (work / "runs" / ".settings").glob("*.yaml")}


def _wait_settings(work, done, what: str, timeout_s: float = 150) -> None:
    """Wait until ``done(texts of the visitors' settings files)``: the field's write has
    answered (a reload before that would rightly show the older value). Generous for CI's
    load: a write normally lands within a second."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done(list(_settings_files(work).values())):
            return
        time.sleep(0.2)
    found = {name: text[-600:] for name, text in _settings_files(work).items()}
    raise AssertionError(f"settings never {what} in {timeout_s:.0f} s: {found}")


def _saved(work, *texts: str) -> None:
    _wait_settings(work, lambda saved: any(all(t in s for t in texts) for s in saved),
                   f"saved with {texts}")


def _saved_without(work, text: str) -> None:
    _wait_settings(work, lambda saved: not any(text in s for s in saved),
                   f"rid of {text!r}")


def _value(page, selector: str) -> str:
    return page.locator(f"{selector} input, {selector} textarea").first.input_value()


def test_settings_survive_reload_and_restart_per_browser(tiny_model_dir, tmp_path, browser):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "quickstart.yaml").write_text(
        "train:\n  max_steps: 7\n  output_dir: runs/quickstart\n", encoding="utf-8")
    port = free_port()   # the same origin after the restart: the browser keeps its token
    proc = _serve(tmp_path, tiny_model_dir, port)
    url = f"http://127.0.0.1:{port}/"
    mine = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        page = mine.new_page()
        page.goto(url)
        _loaded(page)
        open_tab(page, "train")
        assert _value(page, "#train-max-steps") == "7"
        fill(page, "#train-max-steps", "123")
        page.get_by_label("简体中文").check()
        wait_text(page, "#tab-train-button", "训练")
        _saved(tmp_path, "max_steps: 123", "lang: zh")

        page.reload()
        _loaded(page)
        open_tab(page, "train")
        assert _value(page, "#train-max-steps") == "123"
        wait_text(page, "#tab-train-button", "训练")   # the language came back too

        stop_app(proc)
        proc = _serve(tmp_path, tiny_model_dir, port)
        page.reload()
        _loaded(page)
        open_tab(page, "train")
        assert _value(page, "#train-max-steps") == "123", "lost on restart"

        other = browser.new_context()
        try:
            theirs = other.new_page()
            theirs.goto(url)
            _loaded(theirs)
            open_tab(theirs, "train")
            assert _value(theirs, "#train-max-steps") == "7", "another browser got my settings"
            wait_text(theirs, "#tab-train-button", "Train")
        finally:
            other.close()

        open_tab(page, "model")
        page.locator("#model-load").click()          # the model used goes into Recent
        wait_text(page, "#model-card", "已加载|Loaded")
        fill(page, "#model-path", "HuggingFaceTB/SmolLM2-360M")
        _saved(tmp_path, "SmolLM2-360M")
        page.reload()
        _loaded(page)
        open_tab(page, "model")
        assert _value(page, "#model-path") == "HuggingFaceTB/SmolLM2-360M"
        page.locator("#model-recent input").click()
        page.get_by_role("option").filter(has_text=str(tiny_model_dir)).first.click()
        page.wait_for_function(
            "(want) => document.querySelector('#model-path input, #model-path textarea')"
            ".value === want", arg=str(tiny_model_dir), timeout=TIMEOUT_MS)

        page.locator("#preset-reset").click()
        open_tab(page, "train")
        page.wait_for_function(
            "() => document.querySelector('#train-max-steps input').value === '7'",
            timeout=TIMEOUT_MS)
        _saved_without(tmp_path, "max_steps: 123")   # the reset's write has answered
        page.reload()
        _loaded(page)
        open_tab(page, "train")
        assert _value(page, "#train-max-steps") == "7", "the reset was not kept"
    finally:
        mine.close()
        stop_app(proc)
