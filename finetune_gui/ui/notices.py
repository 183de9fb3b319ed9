"""Long work seen from another window: while training, evaluation or export runs, the page
title shows its progress ('37% · Train · finetune_gui'); when it ends, a desktop notification.

The server draws each job's progress as one bar (``progress_bar``) that names its job and
status; a script in the page's head reads every new bar (``watch``) and does the rest in the
browser. Permission to notify is asked on the first Start click (``ask_on``); where it is
denied or the browser has no Notification API, only the title changes.
"""

from __future__ import annotations

import html

ACTIVE = ("loading", "running", "stopping")

HEAD = """<script>
window.fgNotice = (() => {
  const jobs = {};
  let home = null;
  const name = (job) => {   // the tab's own label, in the page's language, less its number
    const tab = document.querySelector(`#tab-${job}-button`);
    return tab ? tab.innerText.replace(/^\\s*\\d+\\s*·\\s*/, '').trim() : job;
  };
  const retitle = () => {
    home = home ?? document.title;
    const running = Object.entries(jobs).filter(([, j]) => j.running);
    document.title = running.length ? running.map(([job, j]) =>
      (j.pct == null ? '' : `${j.pct}% · `) + name(job)).join(' · ') + ` · ${home}` : home;
  };
  return {
    ask() {
      if ('Notification' in window && Notification.permission === 'default')
        Notification.requestPermission().catch(() => {});
    },
    update(job, running, pct, text) {
      const was = jobs[job] && jobs[job].running;
      jobs[job] = {running, pct};
      retitle();
      if (was && !running && 'Notification' in window && Notification.permission === 'granted')
        try { new Notification(`${name(job)} · ${home}`, {body: text || ''}); } catch (e) {}
    },
    bar(markup) {
      const box = document.createElement('div');
      box.innerHTML = markup || '';
      const bar = box.querySelector('.ft-progress[data-job]');
      if (bar) this.update(bar.dataset.job, bar.dataset.running === '1',
                           Math.round(Number(bar.dataset.pct)), box.innerText.trim());
    },
  };
})();
</script>"""


def progress_bar(job: str, status: str, pct: float, label: str) -> str:
    """A job's progress bar (``job``: its tab, 'train' or 'evaluate'), read by the page's
    script for the title and the notice at the end."""
    running = "1" if status in ACTIVE else "0"
    return (f'<div class="ft-progress" data-job="{job}" data-status="{status}" '
            f'data-running="{running}" data-pct="{pct:.0f}">'
            f'<div class="ft-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="ft-progress-label">{html.escape(label)}</div>')


def watch(bar) -> None:
    """Every new value of the ``gr.HTML`` ``bar`` goes to the page's script."""
    bar.change(None, [bar], None, js="(m) => { window.fgNotice && fgNotice.bar(m); }")


def ask_on(button, job: str | None = None) -> None:
    """Clicking ``button`` asks, the first time, whether the page may notify; with ``job``
    (one without a bar: an export) the click also marks that job running."""
    running = f" fgNotice.update('{job}', true, null, '');" if job else ""
    button.click(None, js=f"() => {{ if (window.fgNotice) {{ fgNotice.ask();{running} }} }}")


def watch_event(event, job: str, result) -> None:
    """A job with no bar of its own (an export): running while ``event`` runs, then ended
    with the text of ``result`` (a Markdown output) as the notice."""
    event.then(None, [result], None,
               js=f"(text) => {{ window.fgNotice && fgNotice.update('{job}', false, null, "
                  "(text || '').replace(/[`*_#]/g, '').split('\\n')[0]); }")
