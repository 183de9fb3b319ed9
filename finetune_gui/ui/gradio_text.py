"""Gradio's own status text that its Chinese table leaves in English, in the page's language.

Gradio writes a queued request's place ('In queue: 1 of 3') from its own translations,
which have no Chinese for it; a busy shared app shows it on every waiting component. A
script in the page's head rewrites such text, as Gradio draws it, into the language picked
in the app's switch (``#lang``), from this app's locale table.
"""

from __future__ import annotations

import json

from .locale import LANGUAGES, t

# Gradio's English text (a regular expression over one text node) -> our locale key; the
# groups fill the key's values in order.
GRADIO_TEXT = {r"^In queue: (\d+) of (\d+)$": ("gradio.queue_position", ("position", "size"))}


def head_script() -> str:
    """The page-head script that rewrites Gradio's text for every language but English."""
    rules = [{"pattern": pattern, "names": list(names),
              "say": {lang: t(key, lang, **{n: "{" + n + "}" for n in names})
                      for lang in LANGUAGES if lang != "en"}}
             for pattern, (key, names) in GRADIO_TEXT.items()]
    return """<script>
(() => {
  const rules = %s.map((r) => ({...r, re: new RegExp(r.pattern)}));
  const lang = () => {
    const picked = document.querySelector('#lang input[type=radio]:checked');
    return picked ? picked.value : 'en';
  };
  const rewrite = (node) => {
    const say = lang();
    if (say === 'en') return;
    for (const rule of rules) {
      const m = rule.re.exec(node.textContent.trim());
      if (!m || !rule.say[say]) continue;
      node.textContent = rule.names.reduce(
        (text, name, i) => text.replaceAll(`{${name}}`, m[i + 1]), rule.say[say]);
    }
  };
  const visit = (root) => {
    if (root.nodeType === Node.TEXT_NODE) return rewrite(root);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) rewrite(n);
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === 'characterData') rewrite(change.target);
      else change.addedNodes.forEach(visit);
    }
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})();
</script>""" % json.dumps(rules, ensure_ascii=False)
