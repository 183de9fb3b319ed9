"""The locale table: every key in English and 简体中文, with the same placeholders."""

from __future__ import annotations

import string

import pytest

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


def test_core_sentences_are_english_text_the_ui_translates():
    """A core ``Message`` is plain English for the CLI and logs, in Chinese on the page."""
    import pickle

    from finetune_gui.errors import FinetuneError
    from finetune_gui.hardware import HardwareInfo
    from finetune_gui.messages import Message
    from finetune_gui.ui.common import friendly
    from finetune_gui.ui.locale import phase, say

    line = HardwareInfo("Xeon", 8, False, 2 ** 31, 2 ** 30).summary_lines()[1]
    assert line == "RAM: 1.0 GiB free of 2.0 GiB"
    assert say(line, "zh") == "内存：可用 1.0 GiB，共 2.0 GiB"
    assert say("plain text", "zh") == "plain text"
    assert pickle.loads(pickle.dumps(line)).key == "hw.ram"
    error = FinetuneError(Message("plan.no_bitsandbytes", quantization="4bit"))
    assert str(error) == "4bit needs bitsandbytes, which is not installed"
    assert friendly(error, "zh") == "4bit 需要 bitsandbytes，但它没有安装"
    assert phase("reading data (37%)", "zh") == "读取数据 (37%)"
    assert phase("a phase no table knows", "zh") == "a phase no table knows"


@pytest.mark.parametrize("key, value, zh", [
    ("train.max_steps", "ten", "UI: train.max_steps 必须是整数，当前为 'ten'"),
    ("train.learning_rate", 0, "UI: train.learning_rate 必须 > 0，当前为 0"),
    ("lora.r", 99999, "UI: lora.r 必须 <= 1024，当前为 99999"),
    ("train.packing", "maybe", "UI: train.packing 必须是 true 或 false，当前为 'maybe'"),
    ("train.lr_scheduler", "zigzag", "UI: train.lr_scheduler 必须是以下之一："),
    ("train.learning_rate", float("nan"), "UI: train.learning_rate 必须是有限的数字，当前为 nan"),
])
def test_a_bad_setting_is_explained_in_the_pages_language(key, value, zh):
    """What a field, a preset or saved settings get wrong reads in Chinese on a Chinese page
    and stays English for the CLI."""
    from finetune_gui.config import RunConfig
    from finetune_gui.errors import ConfigError
    from finetune_gui.ui.common import friendly
    with pytest.raises(ConfigError) as caught:
        RunConfig().set(key, value, source="UI")
    assert friendly(caught.value, "zh").startswith(zh)
    assert "must be" in str(caught.value) and "必须" not in str(caught.value)


def test_a_refused_path_is_explained_in_chinese(tmp_path):
    from finetune_gui.ui.common import friendly
    from finetune_gui.ui.workspace import PathNotAllowed, Workspace
    workspace = Workspace.create(str(tmp_path), "runs", shared=True)
    with pytest.raises(PathNotAllowed) as caught:
        workspace.check("/etc/passwd", "data.path")
    assert "is outside the shared workspace" in str(caught.value)
    assert friendly(caught.value, "zh").startswith("data.path '/etc/passwd' 在共享工作区之外")


@pytest.mark.parametrize("name, zh", [
    ("", "model.name_or_path 为空：请选择一个模型"),
    ("/no/such/model", "找不到模型文件夹：/no/such/model"),
    ("neither-path-nor-hub-id", "找不到模型：'neither-path-nor-hub-id' 既不是已存在的路径"),
])
def test_a_model_that_cannot_be_found_is_explained_in_chinese(name, zh):
    from finetune_gui.errors import ModelLoadError
    from finetune_gui.models import resolve_source
    from finetune_gui.ui.common import friendly
    with pytest.raises(ModelLoadError) as caught:
        resolve_source(name)
    assert str(caught.value).isascii()
    assert friendly(caught.value, "zh").startswith(zh)


@pytest.mark.parametrize("data, zh", [
    ({"optimizer": {}}, "preset.yaml：未知的部分 'optimizer'"),
    ({"lora": 8}, "preset.yaml：部分 'lora' 必须是映射"),
    ({"train": {"learning": 1}}, "preset.yaml：未知的设置项 'train.learning'（是不是想用 train.learning_rate"),
])
def test_a_preset_of_the_wrong_shape_is_explained_in_chinese(data, zh):
    from finetune_gui.errors import ConfigError
    from finetune_gui.ui.common import friendly
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(data, source="preset.yaml")
    assert str(caught.value).isascii()
    assert friendly(caught.value, "zh").startswith(zh)


@pytest.mark.parametrize("name, content, zh", [
    ("sheet.xlsx", b"PK\x03\x04", "{p}：是电子表格，不是数据文件：请另存为 CSV UTF-8"),
    ("empty.jsonl", b"", "{p}：文件是空的"),
    ("broken.json", b'[{"instruction": "a",\n "output": }]', "{p} 第 2 行：JSON 无效：Expecting value"),
    ("rows.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n{"output": "c"}\n',
     "{p} 第 2 行：缺少字段 'output'（另有 1 行有问题：运行 'python -m finetune_gui validate {p}' 查看）"),
    ("fields.jsonl", b'{"question": "a"}\n', "{p}：无法从字段（question）判断格式"),
])
def test_a_data_file_that_cannot_be_used_is_explained_in_chinese(tmp_path, name, content, zh):
    from finetune_gui.data import check_file
    from finetune_gui.errors import DataError
    from finetune_gui.ui.common import friendly
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        check_file(path).raise_if_bad()
    assert str(caught.value).isascii()
    assert friendly(caught.value, "zh").startswith(zh.format(p=path))


@pytest.mark.parametrize("custom, zh", [
    ("### {instruction}", "data.custom_template 必须包含 {instruction} 和 {output}"),
    ("{output} then {instruction}", "data.custom_template：{output} 必须在 {instruction} 之后"),
    ("{instruction} {answer} {output}", "data.custom_template：未知的占位符或多余的花括号（'answer'）"),
])
def test_a_custom_template_that_cannot_work_is_explained_in_chinese(custom, zh):
    from finetune_gui.errors import ConfigError
    from finetune_gui.templates import TemplateSpec
    from finetune_gui.ui.common import friendly
    with pytest.raises(ConfigError) as caught:
        TemplateSpec("custom", custom).check()
    assert str(caught.value).isascii()
    assert friendly(caught.value, "zh").startswith(zh)


def test_edited_rows_and_document_folders_are_explained_in_chinese(tmp_path):
    """The Data tab checks edited rows through a temporary file: its errors name the table."""
    from finetune_gui.data import check_file
    from finetune_gui.errors import DataError
    from finetune_gui.ui.common import friendly
    from finetune_gui.ui.data_view import check_rows
    with pytest.raises(DataError) as caught:
        check_rows([{"question": "a"}])
    assert str(caught.value).startswith("table: cannot tell the format")
    assert friendly(caught.value, "zh").startswith("表格：无法从字段（question）判断格式")
    with pytest.raises(DataError) as caught:
        check_rows([])
    assert friendly(caught.value, "zh") == "表格是空的：请添加一行或加载数据文件"
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError) as caught:
        check_file(tmp_path)
    assert friendly(caught.value, "zh").endswith("：文件夹里没有 .txt 或 .md 文件")


def test_a_training_failure_is_explained_in_chinese():
    """The Train tab says a failed job's reason in the page's language (the job keeps its key)."""
    import torch
    from finetune_gui.faults import out_of_memory_message
    from finetune_gui.ui.locale import say
    oom = out_of_memory_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert oom.startswith("out of GPU memory (could not allocate 2.00 GiB more). Try a smaller")
    assert say(oom, "zh").startswith("GPU 显存不足（无法再分配 2.00 GiB）。请减小 train.batch_size")
    assert say(out_of_memory_message(MemoryError()), "zh").startswith("内存不足。请减小")


# Where an English-only error sentence is right: the command line and the OpenAI-compatible
# API speak English; the rest check the program's own arguments or invariants (a user's
# value is checked by the config before it gets there), so a person never reads them.
ENGLISH_ONLY = {
    "cli.py": "the command line", "cli_serve.py": "the command line", "launch.py": "the command line",
    "serving/": "the API's clients",
    "token_cache.py": "an integrity check: the cache entry is rebuilt",
    "speedups/": "an invariant of a speed-up",
    "config.py:--set": "the command line's --set",
    "export/gguf_export.py:gguf type must": "the Export tab offers only these",
    "export/gguf_export.py:GGUF tensor size": "an invariant of the writer",
    "export/merged.py:dtype must": "the Export tab offers only these",
    "export/merged.py:adapter must": "the program's own argument",
    "export/chat_templates.py:unknown template": "the config checked it",
    "templates.py:unknown template": "the config checked it",
    "estimate/__init__.py:GPU memory": "the program's own argument",
    "estimate/gpus.py:unknown GPU": "bench scripts and tests name the GPU",
    "preference_trainer.py:train.method": "the config checked it",
}


def test_every_error_a_person_reads_has_a_chinese_sentence():
    """A raise with a literal English sentence is allowed only where ENGLISH_ONLY says why."""
    import ast
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "finetune_gui"
    found = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and node.exc.args):
                continue
            first = node.exc.args[0]
            if isinstance(first, ast.BinOp):
                first = first.left
            if isinstance(first, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in first.values)
            elif isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
            else:
                continue
            allowed = any(name.startswith(key) if ":" not in key and key.endswith("/") else
                          name == key if ":" not in key else
                          name == key.split(":")[0] and text.startswith(key.split(":", 1)[1])
                          for key in ENGLISH_ONLY)
            if not allowed:
                found.append(f"{name}:{node.lineno}: {text[:60]}")
    assert not found, "English-only errors (raise them with a messages.Message):\n" + "\n".join(found)
