"""Two browsers, two users on a shared app (--auth twice): each sees and controls only their
own job. Ann starts training; Bob's page shows the job read-only (Stop disabled, a lock
note) and starts from the preset, not from Ann's settings; Ann's Stop works."""

from __future__ import annotations

import shutil

import pytest

from .conftest import free_port, start_app, stop_app, wait_for_line
from .test_wizard import TIMEOUT_MS, fill, open_tab, step_of, wait_text

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_user_app(tiny_model_dir, tmp_path_factory, codes_data_module):
    work = tmp_path_factory.mktemp("two-users")
    (work / "data" / "uploads").mkdir(parents=True)
    shutil.copy(codes_data_module, work / "data" / "uploads" / "codes.jsonl")
    port = free_port()
    log = work / "app.log"
    proc = start_app(["--model", str(tiny_model_dir), "--port", str(port),
                      "--runs-dir", str(work / "runs"),
                      "--auth", "ann:ann-password", "--auth", "bob:bob-password"], log,
                     cwd=work)
    try:
        wait_for_line(log, "Press Ctrl+C to stop", proc, timeout=180)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def codes_data_module(tmp_path_factory):
    from conftest import write_jsonl
    rows = [{"instruction": f"What is code {i}?", "input": "",
             "output": f"Code {i} is blue {i % 3} square."} for i in range(24)]
    return write_jsonl(tmp_path_factory.mktemp("codes") / "codes.jsonl", rows)


def _logged_in_page(browser, url: str, user: str):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    response = context.request.post(url + "login", form={"username": user,
                                                         "password": f"{user}-password"})
    assert response.status == 200, response.text()
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#tab-train-button", timeout=TIMEOUT_MS)
    wait_text(page, "#hardware", "CPU")  # the first load has filled every field
    return context, page


def _stop_button(page):
    return page.locator("#train-stop button, button#train-stop").first


def test_each_user_controls_only_their_own_job(two_user_app, browser):
    url = two_user_app
    ann_context, ann = _logged_in_page(browser, url, "ann")
    bob_context, bob = _logged_in_page(browser, url, "bob")
    try:
        open_tab(ann, "data")
        fill(ann, "#data-path", "data/uploads/codes.jsonl")
        open_tab(ann, "train")
        fill(ann, "#train-max-steps", "400")
        fill(ann, "#train-save-steps", "25")
        ann.locator("#train-start").click()
        wait_text(ann, "#train-stats", r"[1-9]\d* loss points")
        assert step_of(ann) >= 1
        assert not _stop_button(ann).is_disabled()

        bob.reload()                                  # a page opened while Ann trains
        bob.wait_for_selector("#tab-train-button", timeout=TIMEOUT_MS)
        open_tab(bob, "train")
        wait_text(bob, "#train-stats", "started by another visitor")
        wait_text(bob, "#train-progress", r"\d+/\d+")   # Bob watches the progress
        assert _stop_button(bob).is_disabled(), "Bob cannot stop Ann's job"
        open_tab(bob, "data")
        bob_path = bob.locator("#data-path textarea, #data-path input").first.input_value()
        assert bob_path != "data/uploads/codes.jsonl", "Bob's page has not got Ann's settings"

        _stop_button(ann).click()
        wait_text(ann, "#train-stats", "stopped")
    finally:
        ann_context.close()
        bob_context.close()
