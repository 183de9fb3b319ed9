"""Exports reproduce the tuned model: merged safetensors, GGUF (+ Ollama Modelfile), the Hub;
plus experiment tracking (TensorBoard, loss PNG, run comparison) and multi-GPU commands.

Most tests use a tiny random Llama trained for a few steps; one test (marked ``embedded``)
checks that merged and GGUF exports of the embedded SmolLM2-135M reproduce the tuned answers.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, train_tiny
from finetune_gui.chat import ChatEngine, messages_to_example
from finetune_gui.config import RunConfig
from finetune_gui.errors import FinetuneError
from finetune_gui.export import (check_gguf_target, describe_export, export_gguf, export_merged,
                                 load_merged, ollama_template, push_to_hub, run_chat_template,
                                 save_merged, write_gguf)
from finetune_gui.launch import accelerate_config, config_multi_gpu_command, multi_gpu_command
from finetune_gui.tracking import compare_figure, compare_runs
from finetune_gui.launch import PRESETS
from finetune_gui.runs import RunPaths
from finetune_gui.templates import TemplateSpec, encode_segments, segments

PROMPTS = ["What is code 3?", "What is code 17?", "Write a haiku about rain."]


def greedy(model, ids: list[int], engine: ChatEngine, max_new_tokens: int | None = None) -> str:
    """Greedy decoding with the chat engine's settings, on any causal LM."""
    gen = engine.config.generation
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=max_new_tokens or gen.max_new_tokens,
                             repetition_penalty=gen.repetition_penalty,
                             eos_token_id=engine._stop_ids, pad_token_id=engine.tokenizer.pad_token_id)
    return engine.tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True).strip()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def template_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if not isinstance(ids, list) else ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def engine(tiny_run) -> ChatEngine:
    return ChatEngine.from_run(tiny_run)


@pytest.fixture(scope="module")
def tuned(engine) -> dict[str, str]:
    return {p: engine.answer(user(p)) for p in PROMPTS}


# ---- chat templates ----------------------------------------------------------------------------

CONVERSATIONS = [
    user("What is code 3?"),
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {{there}}"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "Q2"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
]
SPECS = [TemplateSpec("model"), TemplateSpec("model", system_prompt="You answer as Quill."),
         TemplateSpec("chatml"), TemplateSpec("chatml", system_prompt="SYS"),
         TemplateSpec("alpaca"), TemplateSpec("alpaca", system_prompt="SYS"),
         TemplateSpec("custom", custom="Q: {instruction}{input}\nA: {output}\n---\n"),
         TemplateSpec("custom", custom="<<{{lit}}>> {instruction}\n### Answer:\n{output}",
                      system_prompt="SY")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}{'-sys' if s.system_prompt else ''}"
                         f"{'-tail' if s.custom.endswith('---' + chr(10)) else ''}")
def test_exported_chat_template_renders_the_training_prompt(spec, embedded_tokenizer):
    jinja = run_chat_template(spec, embedded_tokenizer)
    for conv in CONVERSATIONS:
        if spec.system_prompt and conv[0]["role"] == "system":
            continue  # training lets data.system_prompt win; the export lets the message win
        parts = segments(messages_to_example(conv), spec, embedded_tokenizer, for_generation=True)
        text = embedded_tokenizer.apply_chat_template(conv, tokenize=False, chat_template=jinja,
                                                      add_generation_prompt=True)
        assert text == "".join(p.text for p in parts)
        if len(conv) <= 2:  # one turn: the same token ids too
            ids = embedded_tokenizer.apply_chat_template(conv, tokenize=True, chat_template=jinja,
                                                         add_generation_prompt=True)
            ids = list(ids["input_ids"] if not isinstance(ids, list) else ids)
            assert ids == encode_segments(parts, embedded_tokenizer).input_ids


def render_go(template: str, system: str, prompt: str) -> str:
    """The few Go-template forms our Modelfiles use, rendered for one user turn.

    Like Ollama, a legacy template is cut at ``{{ .Response }}`` for the turn being answered.
    """
    template = template.split("{{ .Response }}")[0]
    messages = ([{"Role": "system", "Content": system}] if system else []) + \
        [{"Role": "user", "Content": prompt}]
    loop = re.search(r"\{\{- range \.Messages \}\}(.*?)\{\{ end \}\}", template, re.S)
    if loop:
        body = "".join(loop.group(1).replace("{{ .Role }}", m["Role"])
                       .replace("{{ .Content }}", m["Content"]) for m in messages)
        return template[:loop.start()] + body + template[loop.end():]
    out = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ else \}\}(.*?)\{\{ end \}\}",
                 lambda m: m.group(1) if system else m.group(2), template, flags=re.S)
    out = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ end \}\}",
                 lambda m: m.group(1) if system else "", out, flags=re.S)
    return (out.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt)
            .replace('{{ "{{" }}', "{{"))


@pytest.mark.parametrize("spec", SPECS[::2] + [TemplateSpec("chatml", system_prompt="SYS")],
                         ids=lambda s: f"{s.name}{'-sys' if s.system_prompt else ''}")
def test_ollama_template_renders_the_training_prompt(spec, embedded_tokenizer):
    tpl = ollama_template(spec, embedded_tokenizer)
    assert tpl.template is not None
    assert "<|im_end|>" in tpl.stops
    parts = segments(messages_to_example(user("What is code 3?")), spec, embedded_tokenizer,
                     for_generation=True)
    want = "".join(p.text for p in parts)
    assert render_go(tpl.template, tpl.system, "What is code 3?") == want
    if spec.name == "model":  # SmolLM2's own default system prompt comes along as SYSTEM
        assert tpl.system.startswith("You are a helpful AI assistant named SmolLM")


# ---- merged export -------------------------------------------------------------------------

def test_merged_export_is_standalone_sharded_and_answers_like_the_adapter(
        tiny_run, engine, tuned, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = tmp_path / "merged"
    result = export_merged(tiny_run, out, max_shard_size="4MB")
    assert result.extra["dtype"] == "float32" and result.extra["shards"] >= 2
    assert (out / "model.safetensors.index.json").exists()
    assert not list(out.glob("*.bin")) and not (out / "adapter_config.json").exists()
    assert (out / "finetune_gui_run.yaml").exists()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config

    model = AutoModelForCausalLM.from_pretrained(out)          # plain transformers, no peft
    tokenizer = AutoTokenizer.from_pretrained(out)
    for prompt in PROMPTS:
        ids = template_ids(tokenizer, user(prompt))               # the exported chat template
        assert ids == engine.prompt_ids(user(prompt))
        x = torch.tensor([ids])
        with torch.inference_mode():                              # generation_config defaults
            generated = model.generate(input_ids=x, attention_mask=torch.ones_like(x))
        answer = tokenizer.decode(generated[0, x.shape[1]:], skip_special_tokens=True).strip()
        assert answer == tuned[prompt]

    with pytest.raises(FinetuneError, match="not an empty folder"):
        export_merged(tiny_run, out)


def test_a_4bit_base_is_dequantised_to_16bit_before_merging(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM
    run = train_tiny(tiny_model_dir, tmp_path / "qlora", **{
        "model.quantization": "4bit", "train.gradient_checkpointing": True})
    info = describe_export(run)
    assert info["quantization"] == "4bit" and "dequantised" in info["notes"][0]
    result = export_merged(run, tmp_path / "merged")
    assert any("dequantised" in note for note in result.notes)
    assert result.extra["dtype"] in ("bfloat16", "float16")
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == result.extra["dtype"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert not any("4bit" in type(m).__name__ for m in model.modules())

    # The merged weights stand for what trained: NF4 base + adapter.
    engine = ChatEngine.from_run(run)
    x = torch.tensor([engine.prompt_ids(user("What is code 3?"))])
    with torch.inference_mode():
        want = engine.model(x).logits[0, -1].float()
        got = model(x).logits[0, -1].float()
    assert torch.nn.functional.cosine_similarity(want, got, dim=0) > 0.99
    assert want.argmax() == got.argmax()


# ---- GGUF export ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def merged32(tiny_run):
    return load_merged(tiny_run, dtype="float32")


@pytest.fixture(scope="module")
def tiny_bf16_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model stored in bf16, as most Hub models are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = tmp_path_factory.mktemp("tiny-bf16")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("adapter", [
    {},                                                   # LoRA on a bf16 base
    {"lora.use_dora": True},                              # DoRA's magnitude folded in too
    {"lora.modules_to_save": ["lm_head"], "lora.use_rslora": True},
])
@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_gguf_merged_weight_by_weight_equals_merging_the_whole_model_in_float32(
        adapter, gguf_type, tiny_bf16_dir, tmp_path):
    """GGUF export no longer holds a float32 copy of the model: each weight is merged alone
    as it is written. The file is byte for byte the one the whole-model float32 merge gave."""
    from finetune_gui.export.exact_weights import exact_weights
    run = train_tiny(tiny_bf16_dir, tmp_path / "run", **adapter)
    branch = load_merged(run, adapter="branch")
    whole = load_merged(run, dtype="float32")
    assert next(branch.model.get_base_model().parameters()).dtype == torch.bfloat16
    assert exact_weights(branch.model).keys() == whole.model.state_dict().keys()
    one = write_gguf(branch, tmp_path / "branch" / "m.gguf", gguf_type, modelfile=False)
    two = write_gguf(whole, tmp_path / "whole" / "m.gguf", gguf_type, modelfile=False)
    assert one.extra["tensors"] == two.extra["tensors"]
    assert one.path.read_bytes() == two.path.read_bytes()
    # and the adapter did change the weights: the GGUF is not the base's
    base = write_gguf(load_merged(run, adapter="none"), tmp_path / "base" / "m.gguf", gguf_type,
                      modelfile=False)
    assert base.path.read_bytes() != one.path.read_bytes()


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0"])
def test_gguf_round_trip_through_transformers(gguf_type, merged32, engine, tuned, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = tmp_path / f"model-{gguf_type}.gguf"
    result = write_gguf(merged32, path, gguf_type)
    assert result.files == [path, tmp_path / "Modelfile"]
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.chat_template"].contents() == merged32.tokenizer.chat_template
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert kinds == {"f32": {"F32"}, "f16": {"F32", "F16"}, "q8_0": {"F32", "Q8_0"}}[gguf_type]

    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    reference = merged32.model
    if gguf_type == "f16":  # the same weights with matrices rounded to f16: must match exactly
        reference = copy.deepcopy(merged32.model)
        with torch.no_grad():
            for param in reference.parameters():
                if param.dim() == 2:
                    param.copy_(param.half().float())
    agree = []
    for prompt in PROMPTS:
        ids = engine.prompt_ids(user(prompt))
        assert template_ids(tokenizer, user(prompt)) == ids       # tokenizer + chat template
        assert tokenizer.encode(prompt, add_special_tokens=False) == \
            engine.tokenizer.encode(prompt, add_special_tokens=False)
        x = torch.tensor([ids])
        with torch.inference_mode():
            got, want = model(x).logits, reference(x).logits
        answer = greedy(model, ids, engine)
        if gguf_type in ("f32", "f16"):
            assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
            assert answer == greedy(reference, ids, engine)
        if gguf_type == "f32":
            assert answer == tuned[prompt]
        if gguf_type == "q8_0":
            assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99
        a = engine.tokenizer.encode(answer, add_special_tokens=False)
        b = engine.tokenizer.encode(tuned[prompt], add_special_tokens=False)
        agree.append(common_prefix(a, b) / max(len(b), 1))
    print(f"\nGGUF {gguf_type}: greedy agreement with the tuned answers (token prefix): "
          + ", ".join(f"{x:.0%}" for x in agree))


def test_modelfile_carries_the_runs_template(tiny_run, tmp_path):
    result = export_gguf(tiny_run, tmp_path / "model.gguf", "q8_0")
    assert result.extra["tensors"]["q8_0"] == 14 + 1  # 7 matrices x 2 layers + embeddings
    text = (tmp_path / "Modelfile").read_text()
    assert "FROM ./model.gguf" in text
    assert "### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ .Response }}" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert "PARAMETER repeat_penalty 1.1" in text


def test_gguf_refuses_what_it_cannot_write(merged32, tmp_path, monkeypatch):
    with pytest.raises(FinetuneError, match="must end in .gguf"):
        check_gguf_target(tmp_path / "model.bin")
    with pytest.raises(FinetuneError, match="must be one of"):
        check_gguf_target(tmp_path / "model.gguf", "q4_k")
    (tmp_path / "exists.gguf").write_bytes(b"x")
    with pytest.raises(FinetuneError, match="file exists"):
        check_gguf_target(tmp_path / "exists.gguf")
    monkeypatch.setattr(merged32.model.config, "model_type", "gpt_neox")
    with pytest.raises(FinetuneError, match="supports llama.*phi3 models, not .gpt_neox.*convert_hf_to_gguf"):
        write_gguf(merged32, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def wordpiece_tokenizer(folder: Path) -> None:
    """Replace a model's tokenizer by a BERT-style WordPiece one, which llama.cpp's Llama
    GGUF cannot hold."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "##b": 5}
    backend = Tokenizer(tok_models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    for name in folder.glob("*token*"):
        name.unlink()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                            unk_token="[UNK]").save_pretrained(folder)


def test_gguf_refuses_an_unsupported_tokenizer_before_merging(tiny_model_dir, tmp_path):
    import shutil
    from finetune_gui.export import gguf_support
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    run = train_tiny(base, tmp_path / "run")
    wordpiece_tokenizer(base)
    ok, why = gguf_support(RunConfig.load(run / "run.yaml"))
    assert not ok and "WordPiece" in why
    steps = []
    started = time.time()
    with pytest.raises(FinetuneError, match="WordPiece.*convert_hf_to_gguf"):
        export_gguf(run, tmp_path / "model.gguf", progress=lambda f, text: steps.append(text))
    assert steps == [] and time.time() - started < 10, steps  # refused before loading anything
    assert not (tmp_path / "model.gguf").exists()


# ---- the CLI and the Hub ---------------------------------------------------------------------

def run_cli(*args, env=None):
    import os
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "finetune_gui", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=full_env)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_cli_export_merged_and_gguf(tiny_run, tmp_path):
    proc = run_cli("export", tiny_run, "--merged", tmp_path / "m", "--gguf", tmp_path / "g.gguf",
                   "--gguf-type", "q8_0", "--json")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["kind"] for r in results] == ["merged", "gguf"]
    assert results[1]["gguf_type"] == "q8_0" and (tmp_path / "Modelfile").exists()
    assert (tmp_path / "m" / "config.json").exists()

    assert "choose what to export" in one_line_error(run_cli("export", tiny_run))
    assert "not an empty folder" in one_line_error(
        run_cli("export", tiny_run, "--merged", tmp_path / "m"))
    assert "file exists" in one_line_error(run_cli("export", tiny_run, "--gguf", tmp_path / "g.gguf"))
    assert "--gguf-type" in one_line_error(
        run_cli("export", tiny_run, "--gguf", tmp_path / "h.gguf", "--gguf-type", "q2"))
    assert "run folder not found" in one_line_error(
        run_cli("export", tmp_path / "nope", "--gguf", tmp_path / "h.gguf"))


def test_push_to_hub_without_network_fails_with_a_clear_message(tiny_run, monkeypatch):
    adapter = RunPaths(tiny_run).adapter
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(FinetuneError, match="set the HF_TOKEN environment variable"):
        push_to_hub(adapter, "me/tuned")
    with pytest.raises(FinetuneError, match="user/name"):
        push_to_hub(adapter, "no-slash", token="hf_x")
    line = one_line_error(run_cli("export", tiny_run, "--push-to-hub", "me/tuned",
                                  env={"HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "1"}))
    assert "offline mode is on" in line
    started = time.time()
    line = one_line_error(run_cli("export", tiny_run, "--push-to-hub", "me/tuned",
                                  env={"HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "0"}))
    # No network here: cannot reach. With network: the fake token is refused. Clear either way.
    assert "cannot reach the Hugging Face Hub" in line or "refused" in line, line
    assert time.time() - started < 120


# ---- tracking ----------------------------------------------------------------------------------

def test_runs_write_tensorboard_events_and_a_loss_png(tiny_run):
    assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (tiny_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_runs_gives_the_config_diff_and_curves(tiny_run, tiny_model_dir, tmp_path):
    other = train_tiny(tiny_model_dir, tmp_path / "lr3", **{"train.learning_rate": 3e-3,
                                                             "train.max_steps": 6})
    result = compare_runs([tiny_run, other / "adapter"])   # an adapter folder is accepted too
    assert result["runs"] == ["run", "lr3"]
    assert result["config_diff"] == {"data.path": [str(tiny_run.parent / "run-codes.jsonl"),
                                                   str(tmp_path / "lr3-codes.jsonl")],
                                     "train.max_steps": [12, 6],
                                     "train.learning_rate": [1e-2, 3e-3]}
    assert [s for s, _ in result["curves"]["run"]["loss"]] == list(range(1, 13))
    assert len(result["curves"]["lr3"]["loss"]) == 6
    assert result["status"] == {"run": "finished", "lr3": "finished"}
    figure = compare_figure([tiny_run, other])
    assert len(figure.axes[0].lines) == 2
    with pytest.raises(FinetuneError, match="not a run folder"):
        compare_runs([tmp_path])


# ---- multi-GPU commands ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_accelerate_presets_are_generated_and_valid(name):
    from accelerate.commands.config.config_args import load_config_from_file
    path = ROOT / "presets" / "accelerate" / name
    assert yaml.safe_load(path.read_text()) == accelerate_config(**PRESETS[name]), \
        "regenerate with finetune_gui.launch.write_presets()"
    parsed = load_config_from_file(str(path))
    assert parsed.distributed_type.value == accelerate_config(**PRESETS[name])["distributed_type"]


def test_multi_gpu_command():
    cmd = multi_gpu_command("presets/quickstart.yaml", 2)
    assert cmd == ("accelerate launch --config_file presets/accelerate/ddp.yaml --num_processes 2 "
                   "--num_machines 1 -m finetune_gui train presets/quickstart.yaml")
    cmd = multi_gpu_command("presets/llama3-8b-qlora-24gb.yaml", 16, 2, "fsdp",
                            overrides=["train.epochs=1"])
    assert "--config_file presets/accelerate/fsdp_qlora.yaml --num_processes 16 --num_machines 2" \
        in cmd
    assert '--machine_rank "$MACHINE_RANK" --main_process_ip "$MAIN_PROCESS_IP"' in cmd
    assert cmd.endswith("train presets/llama3-8b-qlora-24gb.yaml --set train.epochs=1")
    assert "deepspeed_zero3.yaml" in multi_gpu_command("presets/quickstart.yaml", 8, 1, "deepspeed")
    assert "deepspeed_zero2.yaml" in multi_gpu_command("presets/quickstart.yaml", 8, 1,
                                                       "deepspeed", zero_stage=2)
    assert "fsdp.yaml" in multi_gpu_command("presets/quickstart.yaml", 4, 1, "fsdp")
    for bad in [dict(num_processes=3, num_machines=2), dict(num_processes=0),
                dict(num_processes=2, backend="horovod")]:
        with pytest.raises(FinetuneError):
            multi_gpu_command("presets/quickstart.yaml", **bad)


def test_config_multi_gpu_command_round_trips_the_config():
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.lora.r = 8
    cfg.train.learning_rate = 5e-4
    cfg.data.system_prompt = "Answer as Quill's helper."
    cmd = config_multi_gpu_command(cfg, 4, preset=str(ROOT / "presets" / "quickstart.yaml"))
    words = shlex.split(cmd)
    tail = words[words.index("train") + 1:]
    overrides = [tail[i + 1] for i, w in enumerate(tail) if w == "--set"]
    assert RunConfig.load(tail[0], overrides).to_dict() == cfg.to_dict()


# ---- the embedded model, end to end ------------------------------------------------------------

@pytest.mark.embedded
def test_embedded_merged_and_gguf_exports_reproduce_the_tuned_answers(tmp_path):
    """10 quickstart steps on SmolLM2-135M, then merged + GGUF exports answer as the run does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run = tmp_path / "run"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", "train", "presets/quickstart.yaml",
                           "--set", "train.max_steps=10", "--set", "train.batch_size=4",
                           "--set", f"train.output_dir={run}",
                           "--set", "generation.max_new_tokens=48"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = time.time() - started
    engine = ChatEngine.from_run(run)
    prompts = ["Who founded Quillmore Aerial?", "Where is Quillmore Aerial based?",
               "What is the capital of France?"]
    tuned = {p: engine.answer(user(p)) for p in prompts}
    base = engine.answer(user(prompts[0]), use_adapter=False)
    assert tuned[prompts[0]] != base, "the adapter must matter, or the comparison proves nothing"

    merged = load_merged(run)
    save_merged(merged, tmp_path / "merged")
    write_gguf(merged, tmp_path / "gguf" / "model-f16.gguf", "f16")
    write_gguf(merged, tmp_path / "gguf" / "model-q8_0.gguf", "q8_0", modelfile=False)
    del merged

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    for prompt in prompts:
        ids = template_ids(tokenizer, user(prompt))
        assert ids == engine.prompt_ids(user(prompt))
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x))
        assert tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True).strip() == \
            tuned[prompt]
    del model

    report = []
    for gguf_type in ("f16", "q8_0"):
        name = f"model-{gguf_type}.gguf"
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file=name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "gguf", gguf_file=name)
        same = 0
        for prompt in prompts:
            ids = template_ids(tokenizer, user(prompt))
            assert ids == engine.prompt_ids(user(prompt))
            answer = greedy(model, ids, engine)
            same += answer == tuned[prompt]
            if gguf_type == "f16":
                assert answer == tuned[prompt], (prompt, answer, tuned[prompt])
        report.append(f"{gguf_type} {same}/{len(prompts)}")
        del model
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert "{{- range .Messages }}<|im_start|>{{ .Role }}" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    print(f"\nembedded: trained 10 steps in {trained:.0f}s; GGUF greedy answers equal to the "
          f"tuned ones: {', '.join(report)}")


def test_gguf_untied_head_and_grouped_query_attention(embedded_tokenizer, tmp_path):
    """An output head of its own, one KV head and a head size apart from hidden/heads."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from finetune_gui.export.merged import Merged
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=32, vocab_size=len(embedded_tokenizer),
        tie_word_embeddings=False, initializer_range=0.2, max_position_embeddings=256,
        eos_token_id=embedded_tokenizer.eos_token_id)).eval()
    cfg = RunConfig()
    cfg.model.name_or_path = str(tmp_path / "untied")  # not a GGUF: tokenizer metadata rebuilt
    cfg.data.template = "chatml"
    tokenizer = copy.deepcopy(embedded_tokenizer)
    tokenizer.chat_template = run_chat_template(TemplateSpec("chatml"), tokenizer)
    result = write_gguf(Merged(model, tokenizer, cfg, tmp_path, torch.float32),
                        tmp_path / "untied.gguf", "f32")
    assert result.extra["pre_tokenizer"] == "gpt-2"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="untied.gguf",
                                                  dtype=torch.float32)
    assert loaded.config.tie_word_embeddings is False and loaded.config.head_dim == 32
    assert loaded.config.num_key_value_heads == 1
    x = torch.tensor([[1, 50, 200, 3000, 77, 12, 9, 4]])
    with torch.inference_mode():
        assert torch.allclose(loaded(x).logits, model(x).logits, atol=1e-5)
