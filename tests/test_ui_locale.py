"""The locale table: every key in English and 简体中文, with the same placeholders."""

from __future__ import annotations

import string

from finetune_gui.config import RunConfig
from finetune_gui.ui.locale import LANGUAGES, TABLE, t


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_exists_in_both_languages():
    missing = [(key, lang) for key, entry in TABLE.items() for lang in LANGUAGES
               if not (entry.get(lang) or "").strip()]
    assert not missing, missing


def test_placeholders_match_between_languages():
    wrong = {key: (_placeholders(e["en"]), _placeholders(e["zh"])) for key, e in TABLE.items()
             if _placeholders(e["en"]) != _placeholders(e["zh"])}
    assert not wrong, wrong


def test_every_config_field_has_a_label_and_help_in_both_languages():
    config = RunConfig()
    for section in ("model", "data", "lora", "train", "generation"):
        for name in vars(getattr(config, section)):
            for kind in ("field", "help"):
                entry = TABLE[f"{kind}.{section}.{name}"]
                assert entry["en"].strip() and entry["zh"].strip(), (kind, section, name)


def test_english_help_is_the_config_metadata():
    from finetune_gui.config import field_help
    assert TABLE["help.lora.r"]["en"] == field_help("lora.r")


def test_every_key_the_app_uses_exists():
    """Building the app looks up every label; a missing key raises KeyError here."""
    from finetune_gui.ui.app import build_app
    demo = build_app()
    for lang in LANGUAGES:
        updates = demo.ui.translations(lang)
        assert len(updates) == len(demo.ui.texts)
    zh = dict(zip([id(x.component) for x in demo.ui.texts], demo.ui.translations("zh")))
    tab = demo.ui.texts[[i for i, x in enumerate(demo.ui.texts)
                         if x.attrs.get("label") == "tab.model"][0]].component
    assert zh[id(tab)]["label"] == t("tab.model", "zh") == "1 · 模型"
