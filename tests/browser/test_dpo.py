"""SFT then DPO from the browser: load preference pairs, pick the method, start from an SFT
run's adapter, train, and see the reward curves drawn beside the loss (and the pair's
rejected side on the Data tab)."""

from __future__ import annotations

import pytest

from .test_wizard import (TIMEOUT_MS, choose, fill, open_tab, shot, wait_plot_drawn,
                          wait_text)

pytestmark = pytest.mark.browser


def test_sft_then_dpo_from_the_train_tab(app_server, browser, tmp_path, tiny_config):
    from conftest import write_jsonl
    from finetune_gui.training import TrainingJob
    url, runs, _ = app_server
    tiny_config.train.output_dir = str(runs / "sft-first")  # the usual path: SFT, then DPO
    tiny_config.lora.r, tiny_config.lora.alpha = 4, 8
    assert TrainingJob(tiny_config).run().status == "finished"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"What is code {i}?", "chosen": f"Code {i} is blue.",
         "rejected": f"I do not know {i}."} for i in range(24)])
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#tab-data-button", timeout=TIMEOUT_MS)
        # the page's first load fills every field from the config: typing before it has
        # finished would be overwritten (it fills #hardware last)
        wait_text(page, "#hardware", "CPU")
        open_tab(page, "data")
        fill(page, "#data-path", str(pairs))
        page.locator("#data-load").click()
        wait_text(page, "#data-stats", "Rejected side")
        page.wait_for_selector("#data-preview-rejected", state="visible", timeout=TIMEOUT_MS)
        open_tab(page, "train")
        choose(page, "#train-method", "dpo")
        fill(page, "#train-max-steps", "8")
        fill(page, "#train-save-steps", "4")
        fill(page, "#train-output", str(runs / "dpo-browser"))
        fill(page, "#train-init-adapter", str(runs / "sft-first"))
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
        saved = (runs / "dpo-browser" / "run.yaml").read_text()
        assert "method: dpo" in saved and f"init_adapter: {runs / 'sft-first'}" in saved
        assert "r: 4" in saved  # the SFT adapter's LoRA settings, adopted with its weights
    finally:
        context.close()
