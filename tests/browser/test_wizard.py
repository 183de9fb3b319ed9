"""Click through the whole wizard in headless Chromium against the real app server.

load model → edit a row and see the preview change → change the rank and see the
trainable count change → train and see loss points appear → reload mid-training and see
progress continue → stop → evaluate and see the table → chat and get a streamed answer →
export. Screenshots of every tab, taken once the page has drawn, go to the folder in
FINETUNE_GUI_SCREENSHOTS (docs/screenshots for the README's tour).
"""

from __future__ import annotations

import json
import re
import socket
import time

import openai

import pytest

from .conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000


def text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def wait_text(page, selector: str, pattern: str, timeout_ms: int = TIMEOUT_MS) -> str:
    """Wait until the element's text matches the regex ``pattern``; return the text."""
    page.wait_for_function(
        "([sel, pat]) => { const el = document.querySelector(sel);"
        " return !!el && new RegExp(pat).test(el.innerText); }",
        arg=[selector, pattern], timeout=timeout_ms)
    return text(page, selector)


def fill(page, selector: str, value: str, commit: str = "Tab") -> None:
    box = page.locator(f"{selector} textarea, {selector} input").first
    box.fill(value)
    box.press(commit)


def choose(page, selector: str, value: str) -> None:
    """Pick ``value`` in a dropdown by clicking its option, and wait until the box shows
    it (typing and Enter can beat the option list's filter under load and select nothing:
    a DPO test once trained SFT that way)."""
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=value, exact=True).click()
    page.wait_for_function(
        "([sel, want]) => document.querySelector(`${sel} input`).value === want",
        arg=[selector, value], timeout=TIMEOUT_MS)


def pick_run(page, selector: str, name: str) -> None:
    """Choose the run ``name`` in a run dropdown."""
    page.locator(f"{selector} input").click()
    page.get_by_role("option").filter(has_text=name).first.click()


def open_tab(page, name: str) -> None:
    page.locator(f"#tab-{name}-button").click()
    page.wait_for_timeout(300)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_selector("body.fg-ready", state="attached")  # not greyed out as it loads
    page.add_style_tag(content=".toast-wrap { display: none !important; }")
    page.wait_for_timeout(400)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_plot_drawn(page, selector: str) -> None:
    """Wait until the chart has drawn its lines (Vega draws into a canvas or an SVG)."""
    try:
        page.wait_for_function(
            """(sel) => { const root = document.querySelector(sel); if (!root) return false;
                if (root.querySelector('svg path.mark-line, svg .mark-line path, svg .mark-symbol path'))
                    return true;
                const canvas = root.querySelector('canvas'); if (!canvas || !canvas.width) return false;
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let colored = 0;
                for (let i = 0; i < data.length; i += 16) {
                    const r = data[i], g = data[i + 1], b = data[i + 2], a = data[i + 3];
                    if (a > 0 && Math.abs(r - b) > 60) colored++;   // the blue/orange lines
                }
                return colored > 20; }""", arg=selector, timeout=TIMEOUT_MS)
    except Exception:
        drawn = page.evaluate(
            """(sel) => { const root = document.querySelector(sel); if (!root) return 'absent';
                const svg = root.querySelector('svg');
                return `visible=${root.offsetWidth}x${root.offsetHeight} ` +
                    `svg=${svg ? svg.getAttribute('width') + 'x' + svg.getAttribute('height') : 'none'} ` +
                    `lines=${root.querySelectorAll('.mark-line path, path.mark-line').length} ` +
                    `canvas=${!!root.querySelector('canvas')} text=${root.innerText.slice(0, 300)}`; }""",
            selector)
        raise AssertionError(f"{selector} drew no lines: {drawn}") from None


def trainable(page) -> int:
    shown = wait_text(page, "#lora-count", r"parameters:\s*\d")
    return int(re.search(r"parameters:\s*([\d,]+)", shown).group(1).replace(",", ""))


def step_of(page) -> int:
    found = re.search(r"(\d+)/(\d+)", text(page, "#train-progress"))
    return int(found.group(1)) if found else -1


def test_whole_wizard(app_server, browser, codes_data):
    url, runs, log = app_server
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#model-load", timeout=TIMEOUT_MS)
    t0 = time.time()

    # ---- Model: the --model folder is preselected; load it and see its card ----------
    wait_text(page, "#hardware", "CPU")
    page.locator("#model-load").click()
    card = wait_text(page, "#model-card", "Loaded")
    assert "q_proj" in card and "Parameters" in card
    shot(page, "model")

    # ---- Data: load a file, edit a row, see the preview change, save -----------------
    open_tab(page, "data")
    fill(page, "#data-path", str(codes_data))
    page.locator("#data-load").click()
    wait_text(page, "#data-summary", r"24 rows")
    wait_text(page, "#data-preview", "Code 0 is blue")
    fill(page, "#row-output", "Code 0 is PURPLE-42 square.", commit="Tab")
    page.locator("#row-apply").click()
    wait_text(page, "#data-preview", "PURPLE-42")
    assert "Code 0 is blue" not in text(page, "#data-preview")
    wait_text(page, "#data-summary", "unsaved")
    page.locator("#data-save").click()
    page.wait_for_function("() => !document.querySelector('#data-summary')"
                           ".innerText.includes('unsaved')", timeout=TIMEOUT_MS)
    assert "PURPLE-42" in codes_data.read_text(encoding="utf-8")
    assert list(codes_data.parent.glob("codes.*.bak.jsonl")), "no backup of the original"
    shot(page, "data")

    # ---- LoRA: change the rank, see the trainable count change -----------------------
    open_tab(page, "lora")
    before = trainable(page)
    fill(page, "#lora-r", "4", commit="Enter")
    page.wait_for_function(
        "(n) => { const m = document.querySelector('#lora-count').innerText"
        ".match(/parameters:\\s*([\\d,]+)/i); return m && Number(m[1].replace(/,/g, '')) !== n; }",
        arg=before, timeout=TIMEOUT_MS)
    after = trainable(page)
    assert after * 4 == before, (before, after)   # quickstart r=16 -> 4: a quarter
    count = text(page, "#lora-count")             # the memory parts, and the plan behind them
    assert "Frozen base weights" in count and "How it will run" in count, count
    assert "Speed-ups" in count and "answer_head" in count, count
    shot(page, "lora")

    # ---- Train: start, see loss points appear, reload mid-training, stop -------------
    open_tab(page, "train")
    wait_text(page, "#train-plan", "Mixed precision")   # the plan a Start would follow
    fill(page, "#train-max-steps", "400")
    fill(page, "#train-save-steps", "25")
    fill(page, "#train-learning-rate", "0.005")
    fill(page, "#data-val-split", "0.25")      # held-out rows: an eval loss curve too
    fill(page, "#train-eval-steps", "2")
    page.locator("#train-start").click()
    # the start answers the replay questions with the base model first: minutes on a busy CPU
    wait_text(page, "#train-stats", r"[1-9]\d* loss points", timeout_ms=4 * TIMEOUT_MS)
    seen = step_of(page)
    assert seen >= 1
    shot(page, "train")

    page.reload()
    page.wait_for_selector("#tab-train-button", timeout=TIMEOUT_MS)
    open_tab(page, "train")   # tabs render when first opened
    wait_text(page, "#train-stats", "training")          # re-attached to the running job
    page.wait_for_function(
        "(n) => { const m = document.querySelector('#train-progress').innerText"
        ".match(/(\\d+)\\/(\\d+)/); return m && Number(m[1]) > n; }",
        arg=seen, timeout=TIMEOUT_MS)                      # and it kept going
    assert page.locator("#train-start button, button#train-start").first.is_disabled()
    wait_text(page, "#train-stats", r"eval loss \d")   # the held-out rows were measured
    page.locator("#train-stop").click()
    wait_text(page, "#train-stats", "stopped")
    wait_plot_drawn(page, "#train-plot")
    shot(page, "train")

    # ---- Evaluate: ask the stopped run questions, base vs tuned, see the table --------
    open_tab(page, "evaluate")
    run_dir = next(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    pick_run(page, "#eval-run", run_dir.name)
    wait_text(page, "#eval-summary", "held no rows|Ready")   # the run's default questions
    fill(page, "#eval-data", str(codes_data))
    fill(page, "#eval-limit", "8")
    page.locator("#eval-start").click()
    wait_text(page, "#eval-progress", "Done", timeout_ms=TIMEOUT_MS * 2)
    summary = wait_text(page, "#eval-summary", "ROUGE-L")
    assert "General answers kept" in summary or "general questions" in summary
    assert "Base" in summary and "Change" in summary
    wait_text(page, "#eval-table", "What is code")          # the table of rows is drawn
    saved = json.loads((run_dir / "eval" / "codes.json").read_text(encoding="utf-8"))
    assert len(saved["rows"]) == 8 and saved["summary"]["tuned"]["n"] == 8
    shot(page, "evaluate")

    # ---- Chat: the stopped run has an adapter; a streamed answer arrives ---------------
    open_tab(page, "chat")
    pick_run(page, "#chat-run", run_dir.name)
    fill(page, "#chat-input", "What is code 0?", commit="Enter")
    lengths = page.evaluate("""async () => {
        const seen = new Set();
        const t0 = Date.now();
        while (Date.now() - t0 < 110000) {
            const bots = document.querySelectorAll('#chat-tuned .bot, #chat-tuned [data-testid="bot"]');
            if (bots.length) seen.add(bots[bots.length - 1].innerText.trim().length);
            const info = document.querySelector('#chat-info').innerText;
            if (info.includes('Ready') && seen.size > 2) break;
            await new Promise(r => setTimeout(r, 30));
        }
        return Array.from(seen);
    }""")
    shot(page, "chat")
    nonzero = sorted(n for n in lengths if n > 0)
    if len(nonzero) < 2:
        (log.parent / "chat.html").write_text(page.locator("#chat-tuned").inner_html())
    assert len(nonzero) >= 2, f"answer did not stream: lengths seen {lengths}; see {log}"

    # ---- Export: the adapter folder and a merged model --------------------------------
    open_tab(page, "export")
    pick_run(page, "#export-run", run_dir.name)
    wait_text(page, "#export-adapter", "adapter_config.json")
    page.locator("#export-merge").click()
    wait_text(page, "#export-status", "Saved")
    assert (run_dir / "merged" / "config.json").exists()

    # ---- Export: the OpenAI-compatible API, started from the tab, asked by the client -----
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page.get_by_text("OpenAI-compatible API").click()
    page.locator("#api-port input").fill(str(port))
    page.locator("#api-start").click()
    status = wait_text(page, "#api-status", "Serving")
    key = re.search(r"sk-[A-Za-z0-9_-]+", status).group(0)
    assert f"http://127.0.0.1:{port}/v1" in status
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=run_dir.name, max_tokens=8,
                                           messages=[{"role": "user", "content": "What is code 3?"}])
    assert reply.choices[0].message.content
    wait_text(page, "#api-snippet", "OpenAI")
    shot(page, "export")
    page.locator("#api-stop").click()
    wait_text(page, "#api-status", "not running")

    # ---- Language: switch to 简体中文 at run time ---------------------------------------
    page.get_by_label("简体中文").check()
    wait_text(page, "#tab-model-button", "模型")
    open_tab(page, "model")
    shot(page, "model_zh")
    assert not problems, problems
    print(f"wizard clicked through in {time.time() - t0:.0f}s")


def test_wizard_takes_input_only_after_the_first_load(app_server, browser):
    """A value typed while the page's first load is still on its way would be overwritten
    when that load answers: until it has, the wizard takes no clicks."""
    url = app_server[0]
    page = browser.new_page()
    held, holding = [], [True]

    def hold_calls(route):
        if holding[0]:
            held.append(route)   # the first load's call among them: answered when told
        else:
            route.continue_()

    page.route("**/queue/join*", hold_calls)
    page.goto(url)
    page.wait_for_selector("#model-load", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    assert held, "the page made no queued call on load"
    inert = "() => getComputedStyle(document.querySelector('#tabs')).pointerEvents"
    assert page.evaluate(inert) == "none"
    assert not page.evaluate("() => document.body.classList.contains('fg-ready')")
    holding[0] = False
    for route in held:
        route.continue_()
    page.wait_for_selector("body.fg-ready", state="attached", timeout=TIMEOUT_MS)
    assert page.evaluate(inert) != "none"
    wait_text(page, "#hardware", "CPU")
    page.close()
