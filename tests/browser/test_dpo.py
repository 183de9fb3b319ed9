"""A DPO job from the browser: load preference pairs, pick the method, train, and see the
reward curves drawn beside the loss (and the pair's rejected side on the Data tab)."""

from __future__ import annotations

import pytest

from .test_wizard import TIMEOUT_MS, fill, open_tab, shot, wait_plot_drawn, wait_text

pytestmark = pytest.mark.browser


def test_a_dpo_job_from_the_train_tab(app_server, browser, tmp_path):
    from conftest import write_jsonl
    url, runs, _ = app_server
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"What is code {i}?", "chosen": f"Code {i} is blue.",
         "rejected": f"I do not know {i}."} for i in range(24)])
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#tab-data-button", timeout=TIMEOUT_MS)
        open_tab(page, "data")
        fill(page, "#data-path", str(pairs))
        page.locator("#data-load").click()
        wait_text(page, "#data-stats", "Rejected side")
        page.wait_for_selector("#data-preview-rejected", state="visible", timeout=TIMEOUT_MS)
        open_tab(page, "train")
        fill(page, "#train-method", "dpo", commit="Enter")
        fill(page, "#train-max-steps", "8")
        fill(page, "#train-save-steps", "4")
        fill(page, "#train-output", str(runs / "dpo-browser"))
        page.locator("#train-start").click()
        try:
            wait_text(page, "#train-progress", "finished|8/8", timeout_ms=TIMEOUT_MS)
        except Exception:
            shot(page, "train-dpo-failed")
            raise AssertionError("no finished DPO job; the page says: " +
                                 page.locator("body").inner_text()[:3000]) from None
        wait_plot_drawn(page, "#train-rewards")
        wait_plot_drawn(page, "#train-logps")
        shot(page, "train-dpo")
        assert (runs / "dpo-browser" / "adapter" / "adapter_model.safetensors").exists()
        assert "dpo" in (runs / "dpo-browser" / "run.yaml").read_text()
    finally:
        context.close()
