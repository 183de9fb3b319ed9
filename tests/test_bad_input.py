"""The bad-input catalogue: every case gets one exact, readable message, and the app keeps running.

Each case is checked twice in this process: in the core (the message the CLI prints after
``error: ``) and through the UI handler a person would use (the message box text, with the
handler returning normally or raising only ``gr.Error``). A representative subset also runs
the real CLI as a subprocess (one line on stderr, exit code 2, no traceback).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from conftest import ROOT, ui_handler
from finetune_gui import models
from finetune_gui.config import ModelConfig, RunConfig
from finetune_gui.data import check_file
from finetune_gui.errors import FinetuneError
from finetune_gui.training import TrainingJob
from finetune_gui.ui.app import build_app
from finetune_gui.ui.common import AppOptions
from finetune_gui.ui.jobs import JobRegistry
from finetune_gui.ui.state import UserState

A = {"instruction": "Say hi", "input": "", "output": "hi"}
MESSAGES = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
SAVE_AS_CSV = "save it as CSV UTF-8 (File > Save As > CSV) and load the .csv"


def lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def xlsx_bytes() -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buf.getvalue()


# ---- data files ---------------------------------------------------------------------------------
# (id, file name, content, core message, UI message or None = same as the core's).
# "{p}" is the file's path. An empty core message means the file must load without error.

DATA_CASES = [
    ("json-malformed", "d.json", b'[{"instruction": "a", "output": "b"},\n {"instruction": }]',
     "{p} line 2: invalid JSON: Expecting value (column 18)", None),
    ("jsonl-malformed-line", "d.jsonl", lines(A, b'{"instruction": "x", "output": '),
     "{p} line 2: invalid JSON: Expecting value (column 32)",
     "{p} line 2: invalid JSON: Expecting value (column 32) — fix it in a text editor first "
     "(1 unreadable line(s))"),
    ("bom-then-bad-row", "d.jsonl", b"\xef\xbb\xbf" + lines(A, {"instruction": "q"}),
     "{p} line 2: missing field 'output'", ""),
    ("bom-clean", "d.jsonl", b"\xef\xbb\xbf" + lines(A), "", ""),
    ("jsonl-not-utf8", "d.jsonl", lines(A, b'{"instruction": "caf\xe9", "output": "x"}'),
     "{p} line 2: not UTF-8 text (byte 21)",
     "{p} line 2: not UTF-8 text (byte 21) — fix it in a text editor first "
     "(1 unreadable line(s))"),
    ("csv-not-utf8", "d.csv", b"instruction,output\ncaf\xe9,x\n", "{p}: not UTF-8 text", None),
    ("utf16", "d.jsonl", json.dumps(A).encode("utf-16"),
     "{p}: is UTF-16 text: save it again as UTF-8", None),
    ("mixed-formats", "d.jsonl", lines(A, MESSAGES, A | {"output": "yo"}),
     "{p} line 2: row is in messages format but the file is alpaca: one format per file", ""),
    ("empty-strings", "d.jsonl", lines({"instruction": "", "output": "a"}, A),
     "{p} line 1: field 'instruction' is empty", ""),
    ("whitespace-answer", "d.jsonl", lines(A, {"instruction": "q", "output": "   "}),
     "{p} line 2: field 'output' is empty", ""),
    ("binary-renamed-jsonl", "d.jsonl", bytes(range(256)) * 8,
     "{p}: looks like a binary file, not JSONL text", None),
    ("csv-quoted-commas-newlines", "d.csv",
     b'instruction,input,output\n"Say, hi","","line one\nline two"\nA,,B\n', "", ""),
    ("xlsx", "sheet.xlsx", xlsx_bytes(), "{p}: is a spreadsheet, not a data file: " + SAVE_AS_CSV,
     None),
    ("xlsx-renamed-csv", "sheet.csv", xlsx_bytes(),
     "{p}: is a spreadsheet or ZIP archive renamed to .csv, not CSV text: " + SAVE_AS_CSV, None),
    ("json-scalar", "d.json", b"42", "{p}: expected a JSON list of rows, got int", None),
    ("parquet-garbage", "d.parquet", b"not parquet at all",
     "{p}: cannot read PARQUET: Parquet magic bytes not found in footer. Either the file is "
     "corrupted or this is not a parquet file.", None),
    ("csv-unterminated-quote", "d.csv", b'instruction,output\n"q,a\n',
     "{p}: cannot read CSV: Error tokenizing data. C error: EOF inside string starting at row 1",
     None),
    ("csv-wrong-columns", "d.csv", b"question,answer\nq,a\n",
     "{p}: cannot tell the format from its fields (question, answer); need instruction/output "
     "(alpaca), messages, conversations, prompt/chosen/rejected (preference), "
     "prompt/completion/label (kto) or text (raw text)", ""),
    ("empty-file", "d.jsonl", b"", "{p}: the file is empty", None),
]


def core_data_message(path: Path) -> str:
    try:
        check_file(path).raise_if_bad()
    except FinetuneError as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def ui_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-root")
    (root / "presets").mkdir()
    registry = JobRegistry()
    demo = build_app(AppOptions(root=str(root), runs_dir=str(root / "runs")), registry)
    return demo, root, registry



def ui_message(call) -> tuple[str, object]:
    """Run a handler; ``(message shown, return value)``. Anything but gr.Error is a crash."""
    try:
        return "", call()
    except gr.Error as exc:
        return exc.message, None


@pytest.mark.parametrize("case, name, content, core, ui", DATA_CASES,
                         ids=[c[0] for c in DATA_CASES])
def test_data_file(case, name, content, core, ui, tmp_path, ui_app, tiny_model_dir):
    path = tmp_path / name
    path.write_bytes(content)
    assert core_data_message(path) == core.format(p=path)

    demo, _, _ = ui_app
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    shown, views = ui_message(lambda: ui_handler(demo, "data_tab", "on_load")(st, str(path)))
    expected = (core if ui is None else ui).format(p=path)
    assert shown == expected
    if not shown:   # loaded: bad rows are listed in the error table, file problems on top
        summary, errors = views[0], views[2]
        first = core.format(p=path).split(" (and ")[0]
        if not first:
            assert "✅" in summary
        elif first.startswith(f"{path} line "):
            number, reason = first[len(f"{path} line "):].split(": ", 1)
            assert errors.values.tolist()[0] == [int(number), reason]
        else:
            assert f"❌ {first.replace(str(path), 'table')}" in summary


def test_a_folder_and_a_missing_file_as_data(tmp_path, ui_app):
    demo, _, _ = ui_app
    on_load = ui_handler(demo, "data_tab", "on_load")
    for path, message in ((tmp_path, f"{tmp_path}: a folder without .txt or .md files"),
                          (tmp_path / "nope.jsonl", f"{tmp_path / 'nope.jsonl'}: data file not found")):
        assert core_data_message(path) == message
        assert ui_message(lambda: on_load(UserState(config=RunConfig()), str(path)))[0] == message


def test_100k_rows_load_in_the_core_and_the_ui(tmp_path, ui_app, tiny_model_dir):
    path = tmp_path / "big.jsonl"
    path.write_text((json.dumps(A) + "\n") * 60_000 + (json.dumps(A | {"output": "yo"}) + "\n")
                    * 40_000)
    t0 = time.perf_counter()
    report = check_file(path)
    core_seconds = time.perf_counter() - t0
    assert len(report.examples) == 100_000 and not report.errors
    assert len(report.warnings) == 99_998            # duplicates are warned about, not errors
    demo, _, _ = ui_app
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    st.config.data.template = "alpaca"
    t0 = time.perf_counter()
    views = ui_handler(demo, "data_tab", "on_load")(st, str(path))
    ui_seconds = time.perf_counter() - t0
    assert len(st.rows) == 100_000 and len(views[1]) == 100_000
    assert "100000" in views[0].replace(",", "") and "✅" in views[0]
    assert core_seconds < 20 and ui_seconds < 60, (core_seconds, ui_seconds)


# ---- model sources ------------------------------------------------------------------------------

def write_gguf(path: Path, tensor_type=None, patch_type: int | None = None) -> Path:
    """A one-block llama GGUF holding only the embedding (the rest is missing)."""
    import gguf
    import numpy as np
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(256)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_vocab_size(8)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(8)])
    writer.add_token_merges([])
    writer.add_token_types([1] * 8)
    writer.add_token_scores([0.0] * 8)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    kind = tensor_type or gguf.GGMLQuantizationType.Q8_0
    block, size = gguf.GGML_QUANT_SIZES[kind]
    writer.add_tensor("token_embd.weight", np.zeros((8, 256 // block * size), dtype=np.uint8),
                      raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if patch_type is not None:   # rewrite the tensor's type id in the header
        raw = bytearray(path.read_bytes())
        at = raw.index(b"token_embd.weight") + len(b"token_embd.weight")
        dims = struct.unpack_from("<I", raw, at)[0]
        struct.pack_into("<I", raw, at + 4 + 8 * dims, patch_type)
        path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="module")
def bad_models(tiny_model_dir, tmp_path_factory):
    from safetensors.torch import load_file
    import torch
    base = tmp_path_factory.mktemp("bad-models")
    out = {}
    out["truncated-safetensors"] = folder = base / "truncated"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out["unsupported-architecture"] = folder = base / "unsupported"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="nosucharch", architectures=["NoSuchForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    out["pickle-only"] = folder = base / "binweights"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    out["no-config"] = folder = base / "noconfig"
    folder.mkdir()
    out["config-not-json"] = folder = base / "badconfig"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text("{not json")
    import gguf
    out["gguf-unknown-quant-type"] = write_gguf(base / "unknown-type.gguf", patch_type=77)
    out["gguf-unsupported-quant"] = write_gguf(base / "q1.gguf", gguf.GGMLQuantizationType.Q1_0)
    out["gguf-missing-weights"] = write_gguf(base / "partial.gguf",
                                             gguf.GGMLQuantizationType.F32)
    (base / "text.gguf").write_text("hello world " * 20)
    out["gguf-not-gguf"] = base / "text.gguf"
    out["missing-path"] = base / "no" / "such" / "model"
    out["hub-id-offline"] = "nobody-xyz/no-such-model"
    return out


MODEL_CASES = [
    ("missing-path", "model folder not found: {p}"),
    ("hub-id-offline", "cannot download 'nobody-xyz/no-such-model' from the Hugging Face Hub (no "
                       "network, or the id is wrong): download it elsewhere and give its local "
                       "folder"),
    ("truncated-safetensors", "{p}: a .safetensors weight file is damaged or incomplete (Error "
                              "while deserializing header: incomplete metadata, file not fully "
                              "covered): download or copy it again"),
    ("unsupported-architecture", "{p}: The checkpoint you are trying to load has model type "
                                 "`nosucharch` but Transformers does not recognize this "
                                 "architecture. This could be because of an issue with the "
                                 "checkpoint, or because your version of Transformers is out of "
                                 "date."),
    ("pickle-only", "{p}: only pickle weights (pytorch_model.bin), which can run code when "
                    "loaded; set model.allow_pickle=true only if you trust where they came from"),
    ("no-config", "{p}: no config.json in this folder — not a transformers model"),
    ("config-not-json", "{p}: It looks like the config file at '{p}/config.json' is not a valid "
                        "JSON file."),
    ("gguf-unknown-quant-type", "{p}: cannot load this GGUF file: tensor type 77 is not a GGUF "
                                "quantization type this version can read (an unknown quant "
                                "type, or a damaged file)"),
    ("gguf-unsupported-quant", "{p}: cannot load this GGUF file: Dequantization for Q1_0 is not "
                               "yet implemented"),
    ("gguf-missing-weights", "{p}: the file lacks 10 of the model's weights (e.g. "
                             "model.layers.0.input_layernorm.weight): it is incomplete or not a "
                             "llama model"),
    ("gguf-not-gguf", "{p}: cannot load this GGUF file: {p} does not start with the GGUF magic "
                      "bytes, so it is not a GGUF file."),
]


@pytest.mark.parametrize("case, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_source(case, message, bad_models, ui_app, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_GUI_CACHE", str(tmp_path / "cache"))   # GGUF conversions
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = bad_models[case]
    expected = message.format(p=source)
    with pytest.raises(FinetuneError) as info:
        models.load_model(ModelConfig(name_or_path=str(source)))
    assert str(info.value) == expected

    demo, _, _ = ui_app
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(source)
    shown, _ = ui_message(lambda: ui_handler(demo, "model_tab", "on_load")(st))
    assert shown == expected
    assert st.model is None


def test_pickle_weights_load_only_when_allowed(bad_models):
    model, _ = models.load_model(ModelConfig(name_or_path=str(bad_models["pickle-only"]),
                                             allow_pickle=True))
    assert sum(p.numel() for p in model.parameters()) > 0


# ---- hyperparameters ----------------------------------------------------------------------------
# (key, value as the UI sends it, message). The CLI says "--set: ...", a preset "<file>: ...",
# the UI "UI: ..." and snaps the field back to the value still in force.

FIELD_CASES = [
    ("lora.r", 0, "lora.r must be >= 1, got 0"),
    ("lora.r", 2.5, "lora.r must be a whole number, got 2.5"),
    ("lora.alpha", -16, "lora.alpha must be > 0, got -16"),
    ("lora.dropout", 0.95, "lora.dropout must be <= 0.9, got 0.95"),
    ("train.learning_rate", float("nan"), "train.learning_rate must be a finite number, got nan"),
    ("train.learning_rate", float("inf"), "train.learning_rate must be a finite number, got inf"),
    ("train.batch_size", 0, "train.batch_size must be >= 1, got 0"),
    ("train.max_seq_len", 4, "train.max_seq_len must be >= 8, got 4"),
    ("train.epochs", 0, "train.epochs must be > 0, got 0"),
    ("train.warmup_ratio", 0.9, "train.warmup_ratio must be <= 0.5, got 0.9"),
]


@pytest.mark.parametrize("key, value, message", FIELD_CASES,
                         ids=[f"{k}={v}" for k, v, _ in FIELD_CASES])
def test_hyperparameter_field(key, value, message, ui_app):
    config = RunConfig()
    with pytest.raises(FinetuneError) as info:
        config.set(key, value, source="--set")
    assert str(info.value) == f"--set: {message}"
    demo, _, _ = ui_app
    st = UserState(config=RunConfig())
    before = getattr(getattr(st.config, key.split(".")[0]), key.split(".")[1])
    update, status = ui_handler(demo, "fields", f"set_{key.replace('.', '_')}")(st, value)
    assert status == f"⚠️ UI: {message}"
    assert getattr(getattr(st.config, key.split(".")[0]), key.split(".")[1]) == before
    assert update["value"] == before, "the field snaps back to the value in force"


def test_no_target_layer_is_refused(ui_app, tiny_model_dir):
    """In the UI targets are ticked from the model's own layers; none ticked is refused."""
    with pytest.raises(FinetuneError) as info:
        RunConfig().set("lora.target_modules", [], source="--set")
    assert str(info.value) == ("--set: lora.target_modules must be 'all-linear' or a non-empty "
                               "list of module names, got []")
    demo, _, _ = ui_app
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    targets, count = ui_handler(demo, "lora_tab", "on_targets")(st, [])
    assert st.config.lora.target_modules == "all-linear"
    assert set(targets["value"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj"}


JOB_CASES = [
    ("seq-len-above-model-max", {"train.max_seq_len": 4096},
     "train.max_seq_len=4096 is above this model's maximum of 512 tokens "
     "(max_position_embeddings): set it to 512 or less"),
    ("targets-match-nothing", {"lora.target_modules": ["query_key_value"]},
     "lora.target_modules ['query_key_value'] match no layer of this model; see the model's "
     "linear-layer names on the Model tab"),
    ("rows-longer-than-max-seq-len", {"train.max_seq_len": 8},
     "every example is longer than train.max_seq_len=8 before its answer starts: raise it"),
]


@pytest.mark.parametrize("case, overrides, message", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_settings_refused_when_the_job_starts(case, overrides, message, tiny_config, ui_app):
    for key, value in overrides.items():
        tiny_config.set(key, value)
    state = TrainingJob(tiny_config).run()
    assert (state.status, state.message) == ("failed", message)

    demo, root, registry = ui_app
    st = UserState(config=tiny_config.copy())
    st.config.train.output_dir = str(root / "runs" / case)
    nones = [None] * len(demo.ui.fields)
    ui_handler(demo, "train_tab", "on_start")(st, *nones)
    final = registry.current.wait(timeout=120)
    assert (final.status, final.message) == ("failed", message)
    progress, stats, *_ = ui_handler(demo, "train_tab", "poll")(st)
    assert message in stats and 'data-status="failed"' in progress
    assert not registry.busy(), "the server takes the next job"


# ---- presets ------------------------------------------------------------------------------------

def bomb() -> str:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(rows) + "\n"


PRESET_CASES = [
    ("unknown-key", "lora:\n  r: 8\n  rank: 4\n", "{p}: unknown key 'lora.rank'"),
    ("unknown-key-hint", "train:\n  learning: 0.1\n",
     "{p}: unknown key 'train.learning' (did you mean train.learning_rate?)"),
    ("unknown-section", "optimizer:\n  lr: 1\n",
     "{p}: unknown section 'optimizer' (known: model, data, lora, train, generation)"),
    ("wrong-type-int", "lora:\n  r: eight\n", "{p}: lora.r must be a whole number, got 'eight'"),
    ("wrong-type-bool", "train:\n  gradient_checkpointing: maybe\n",
     "{p}: train.gradient_checkpointing must be true or false, got 'maybe'"),
    ("wrong-type-list", "lora:\n  modules_to_save: lm_head\n",
     "{p}: lora.modules_to_save must be a list of names, got 'lm_head'"),
    ("section-not-mapping", "lora: 8\n", "{p}: section 'lora' must be a mapping"),
    ("not-a-mapping", "- a\n- b\n", "{p}: expected a mapping of sections, got list"),
    ("yaml-bomb", bomb(), "{p}: YAML is too deeply aliased or too large"),
    ("python-object-tag", "model: !!python/object/apply:os.system ['echo pwned']\n",
     "{p}: line 1: invalid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("syntax-error", "lora:\n  r: [1, 2\n",
     "{p}: line 3: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("too-large", "# " + "x" * 1_000_100 + "\n", "{p}: config file is larger than 1000 kB"),
    ("not-utf8", b"lora:\n  r: \xff\n", "{p}: not UTF-8 text"),
]


@pytest.mark.parametrize("case, text, message", PRESET_CASES, ids=[c[0] for c in PRESET_CASES])
def test_preset(case, text, message, ui_app):
    demo, root, _ = ui_app
    path = root / "presets" / f"{case}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FinetuneError) as info:
        RunConfig.load(path)
    assert str(info.value) == message.format(p=path)
    st = UserState(config=RunConfig())
    st.config.lora.r = 5
    shown, _ = ui_message(lambda: ui_handler(demo, "app", "on_preset_load")(
        st, f"presets/{case}.yaml"))
    assert shown == message.format(p=path)
    assert st.config.lora.r == 5, "the session's settings are untouched"


# ---- the CLI: one line, exit code 2, no traceback (a representative subset) ------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "finetune_gui", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def cli_inputs(bad_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-bad")
    (folder / "sheet.xlsx").write_bytes(xlsx_bytes())
    (folder / "latin1.json").write_bytes(b'[{"instruction": "caf\xe9", "output": "x"}]')
    (folder / "bomb.yaml").write_text(bomb())
    return folder


CLI_CASES = [
    ("xlsx", ["--set", "data.path={f}/sheet.xlsx"],
     "{f}/sheet.xlsx: is a spreadsheet, not a data file: " + SAVE_AS_CSV),
    ("json-not-utf8", ["--set", "data.path={f}/latin1.json"], "{f}/latin1.json line 1: not UTF-8 text"),
    ("nan-learning-rate", ["--set", "train.learning_rate=.nan"],
     "--set: train.learning_rate must be a finite number, got nan"),
    ("yaml-bomb", "bomb", "{f}/bomb.yaml: YAML is too deeply aliased or too large"),
    ("truncated-safetensors", ["--set", "model.name_or_path={m[truncated-safetensors]}"],
     "a .safetensors weight file is damaged or incomplete"),
    ("pickle-only", ["--set", "model.name_or_path={m[pickle-only]}"],
     "only pickle weights (pytorch_model.bin), which can run code when loaded"),
    ("gguf-unknown-quant-type", ["--set", "model.name_or_path={m[gguf-unknown-quant-type]}"],
     "tensor type 77 is not a GGUF quantization type this version can read"),
    ("seq-len-above-model-max", ["--set", "model.name_or_path={tiny}", "--set",
                                 "train.max_seq_len=4096", "--set", "data.template=alpaca"],
     "train.max_seq_len=4096 is above this model's maximum of 512 tokens"),
]


@pytest.mark.parametrize("case, args, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_says_it_in_one_line(case, args, message, cli_inputs, bad_models, tiny_model_dir,
                                 tmp_path):
    fill = dict(f=cli_inputs, m={k: str(v) for k, v in bad_models.items()}, tiny=tiny_model_dir)
    if args == "bomb":
        command = ["train", cli_inputs / "bomb.yaml"]
    else:
        command = ["train", "presets/quickstart.yaml", *[a.format(**fill) for a in args]]
    proc = run_cli(*command, "--set", f"train.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert message.format(**fill) in errors[0]
