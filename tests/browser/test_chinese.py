"""The page in 简体中文, every tab, with long work ending in a notice.

Switch the page to Chinese, open every tab once it has something to show (a loaded model,
data, a short training run, its evaluation and export) and fail on any English word left in
what a person reads: the visible text (labels, buttons, status lines, chart axes) and the
placeholders. While the
training, evaluation and export run, the page title shows their progress and goes back
afterwards; each ends with a desktop notification (``window.Notification``, captured here).
"""

from __future__ import annotations

import re

import pytest

from .test_wizard import (TIMEOUT_MS, fill, open_tab, pick_run, shot, wait_plot_drawn,
                          wait_text)

pytestmark = pytest.mark.browser

# Words that are the same in a Chinese interface: names of models, libraries, formats and
# hardware, units, and the names of settings and values a person types or picks as they are
# (field help quotes them). Identifiers with _ . / - or digits are skipped by their shape.
ALLOWED = {
    # products, libraries, file formats
    "english",   # the language switch offers English by its own name
    "finetune", "gui", "gradio", "lora", "qlora", "dora", "rslora", "smollm", "hugging", "face", "hub",
    "gguf", "ollama", "modelfile", "openai", "api", "peft", "trl", "pytorch", "python",
    "accelerate", "json", "jsonl", "csv", "parquet", "yaml", "safetensors", "cuda", "nvidia",
    "liger", "neftune", "adamw", "rouge", "sdpa", "eager", "dpo", "orpo", "kto", "rpo",
    "sft", "fsdp", "deepspeed", "gloo", "curl", "transformer", "llama", "qwen", "intel",
    "amd", "xeon", "epyc", "core", "processor", "swiglu", "softmax", "logits", "nf",
    # hardware and units
    "cpu", "gpu", "ram", "vram", "gib", "mib", "kib", "eta", "avx", "amx", "bf", "fp",
    # config values and keys shown as they are typed (config.py choices, data fields)
    "auto", "none", "all", "linear", "model", "alpaca", "chatml", "custom", "messages",
    "sharegpt", "preference", "text", "instruction", "input", "output", "conversations",
    "role", "content", "from", "value", "prompt", "chosen", "rejected", "completion",
    "label", "token", "tokens", "alpha", "beta", "top", "bias", "dropout", "off", "safe",
    "bit", "int", "float", "bfloat", "cosine", "constant", "bin", "pickle", "lm", "head",
    "proj", "speedups",
}
# User content, not the app's words: rows of the data, the model's answers, the log. Not
# scanned either: Gradio's footer (its own links) and tooltips, which Gradio writes in
# English, nor a notice's type heading ("Info", Gradio's own); the notice's text is scanned,
# as are the charts' visible axis titles.
CONTENT = ["#data-table", "#data-preview", "#data-preview-rejected", "#eval-table",
           "#chat-tuned", "#chat-base", "#train-log", "#api-snippet", "#cli-command"]

SCAN_JS = """(skip) => {
    const out = [];
    const seen = (el) => el && el.checkVisibility && el.checkVisibility();
    const inContent = (el) => skip.some((s) => el.closest(s));
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!el || !seen(el) || inContent(el) ||
            el.closest('code, pre, script, style, footer, .toast-title'))
            continue;
        out.push(node.textContent);
    }
    for (const el of document.querySelectorAll('[placeholder]'))
        if (seen(el) && !inContent(el)) out.push(el.getAttribute('placeholder'));
    return out;
}"""


def english_words(page) -> dict[str, str]:
    """English words on the page outside the allow-list, each with where it was seen."""
    found = {}
    for piece in page.evaluate(SCAN_JS, CONTENT):
        quoted = re.sub(r"(?<![A-Za-z])'[^'\n]*'(?![A-Za-z])", " ", piece)   # 'literal text' to type, as in help
        for token in re.findall(r"[A-Za-z0-9_./:@~-]+", quoted):
            token = token.strip(".:'-")
            if not re.fullmatch(r"[A-Za-z]{3,}", token) or re.search(r"[a-z][A-Z]", token):
                continue   # identifiers (LlamaForCausalLM), paths, numbers with units
            if token.lower() not in ALLOWED:
                found.setdefault(token, piece.strip()[:120])
    return found


NOTIFICATIONS_JS = """() => {
    window.__notices = [];
    class Captured {
        static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, options) { window.__notices.push({title, body: (options || {}).body}); }
    }
    window.Notification = Captured;
}"""


def notices(page) -> list[dict]:
    return page.evaluate("() => window.__notices")


def watch_titles(page) -> None:
    """Record every title the page shows (a job on a fast machine may end within a poll)."""
    page.evaluate("""() => { window.__titles = [];
        new MutationObserver(() => window.__titles.push(document.title))
            .observe(document.querySelector('title'), {childList: true, subtree: true,
                                                       characterData: true}); }""")


def titles(page) -> list[str]:
    return page.evaluate("() => window.__titles")


def scan(page, tab: str, problems: dict) -> None:
    found = english_words(page)
    if found:
        problems[tab] = found


def test_every_tab_in_chinese(app_server, browser, codes_data):
    url, runs, _log = app_server
    # Gradio's own words (upload boxes, footer) follow the browser's language, as a
    # Chinese reader's browser would have it.
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    context.grant_permissions(["notifications"], origin=url.rstrip("/"))
    context.add_init_script(f"({NOTIFICATIONS_JS})()")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body.fg-ready", state="attached", timeout=TIMEOUT_MS)
    wait_text(page, "#hardware", "CPU")
    title = page.title()
    page.get_by_label("简体中文").check()
    wait_text(page, "#tab-model-button", "模型")
    wait_text(page, "#hardware", "本应用")
    watch_titles(page)
    english: dict[str, dict] = {}
    # Gradio's own queue text (its Chinese table has none), as a busy server shows it
    page.evaluate("""() => { const d = document.createElement('div'); d.id = 'fg-queue-probe';
        d.textContent = 'In queue: 2 of 3'; document.querySelector('#tabs').append(d); }""")
    wait_text(page, "#fg-queue-probe", "排队中：第 2 位，共 3 位")
    page.evaluate("() => document.querySelector('#fg-queue-probe').remove()")

    page.locator("#model-load").click()
    wait_text(page, "#model-card", "架构")
    scan(page, "model", english)

    open_tab(page, "data")
    fill(page, "#data-path", str(codes_data.with_name("missing.jsonl")))
    page.locator("#data-load").click()   # an error, said in Chinese
    page.wait_for_selector(".toast-body:has-text('missing.jsonl：找不到数据文件')",
                           timeout=TIMEOUT_MS)
    page.locator(".toast-close").first.click()
    page.wait_for_selector(".toast-body", state="detached", timeout=TIMEOUT_MS)
    fill(page, "#data-path", str(codes_data))
    page.locator("#data-load").click()
    wait_text(page, "#data-summary", "24 行")
    scan(page, "data", english)

    open_tab(page, "lora")
    wait_text(page, "#lora-count", "可训练参数")
    scan(page, "lora", english)

    open_tab(page, "train")
    wait_text(page, "#train-plan", "运行方式")
    fill(page, "#train-max-steps", "6")
    fill(page, "#train-save-steps", "3")
    fill(page, "#data-val-split", "0.25")
    fill(page, "#train-eval-steps", "2")
    page.locator("#train-start").click()
    wait_text(page, "#train-stats", "已完成", timeout_ms=4 * TIMEOUT_MS)
    page.wait_for_function("(t) => document.title === t", arg=title, timeout=TIMEOUT_MS)
    assert any(re.fullmatch(r"\d+% · 训练 · finetune_gui", s) for s in titles(page)), \
        titles(page)
    wait_plot_drawn(page, "#train-plot")
    scan(page, "train", english)
    shot(page, "train_zh")

    open_tab(page, "evaluate")
    run_dir = next(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    pick_run(page, "#eval-run", run_dir.name)
    fill(page, "#eval-data", str(codes_data))
    fill(page, "#eval-limit", "2")
    page.locator("#eval-start").click()
    wait_text(page, "#eval-progress", "完成", timeout_ms=2 * TIMEOUT_MS)
    wait_text(page, "#eval-summary", "ROUGE-L")
    page.wait_for_function("(t) => document.title === t", arg=title, timeout=TIMEOUT_MS)
    assert any(s.endswith("· 评估 · finetune_gui") for s in titles(page)), titles(page)
    scan(page, "evaluate", english)

    open_tab(page, "chat")
    pick_run(page, "#chat-run", run_dir.name)
    scan(page, "chat", english)

    open_tab(page, "export")
    pick_run(page, "#export-run", run_dir.name)
    wait_text(page, "#export-adapter", "adapter_config.json")
    page.locator("#export-merge").click()
    wait_text(page, "#export-status", "已保存")
    page.wait_for_function("(t) => document.title === t", arg=title, timeout=TIMEOUT_MS)
    assert any(s.endswith("导出 · finetune_gui") for s in titles(page)), titles(page)
    scan(page, "export", english)

    jobs = [n["title"] for n in notices(page)]
    assert [j.split(" · ")[0] for j in jobs] == ["训练", "评估", "导出"], notices(page)
    assert all(n["body"] for n in notices(page)), notices(page)
    assert not english, "English on the Chinese page:\n" + "\n".join(
        f"{tab}: {word!r} in {where!r}" for tab, words in english.items()
        for word, where in words.items())
    assert not errors, errors
