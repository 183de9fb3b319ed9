from pathlib import Path

import pytest

from finetune_gui.config import RunConfig, field_help
from finetune_gui.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def test_defaults_follow_the_chapter_recipe():
    cfg = RunConfig()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32.0, 0.05)
    assert cfg.train.learning_rate == 2e-4


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads(preset):
    cfg = RunConfig.load(preset)
    assert cfg.train.output_dir


def test_quickstart_uses_embedded_model():
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    assert cfg.model.name_or_path == "smollm2-135m-instruct"


def test_yaml_roundtrip(tmp_path):
    cfg = RunConfig()
    cfg.apply_override("lora.r=32")
    cfg.apply_override("lora.target_modules=[q_proj, v_proj]")
    cfg.save(tmp_path / "run.yaml")
    again = RunConfig.load(tmp_path / "run.yaml")
    assert again == cfg
    assert again.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("override, message", [
    ("lora.rank=8", "unknown key 'lora.rank'"),
    ("nope.r=8", "unknown key 'nope.r'"),
    ("lora.r=0", "lora.r must be >= 1, got 0"),
    ("lora.r=eight", "lora.r must be a whole number, got 'eight'"),
    ("lora.alpha=-1", "lora.alpha must be > 0, got -1"),
    ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("model.quantization=3bit", "model.quantization must be one of 4bit, 8bit, none"),
    ("train.gradient_checkpointing=maybe", "must be true or false"),
    ("lora.target_modules=[]", "lora.target_modules must be 'all-linear' or a non-empty list"),
    ("lora.r", "expected section.key=value"),
])
def test_bad_overrides_have_clear_messages(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        RunConfig().apply_override(override)
    assert message in str(info.value)


def test_unknown_key_in_preset_is_rejected(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("lora:\n  r: 8\n  rank: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'lora.rank'"):
        RunConfig.load(path)


def test_yaml_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="too deeply aliased"):
        RunConfig.load(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora:\n  r: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        RunConfig.load(path)


def test_cli_command_reproduces_config():
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.apply_override("lora.r=4")
    cfg.apply_override("lora.target_modules=[q_proj, v_proj]")
    command = cfg.cli_command(str(ROOT / "presets" / "quickstart.yaml"))
    assert "--set lora.r=4" in command
    import shlex
    words = shlex.split(command)
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert RunConfig.load(ROOT / "presets" / "quickstart.yaml", overrides) == cfg


def test_every_field_has_help():
    import dataclasses
    cfg = RunConfig()
    for section in ("model", "data", "lora", "train", "generation"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert len(field_help(f"{section}.{f.name}")) > 10, f"{section}.{f.name}"


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*-qlora-24gb.yaml")),
                         ids=lambda p: p.name)
def test_gpu_presets_follow_the_chapter_recipe(preset):
    cfg = RunConfig.load(preset)
    assert cfg.model.quantization == "4bit"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32.0, 0.05)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj",
                                       "gate_proj", "up_proj", "down_proj"]
    assert cfg.train.learning_rate == 2e-4 and cfg.train.epochs == 3
    assert cfg.train.optimizer == "paged_adamw_8bit"
    assert (ROOT / cfg.data.path).is_file()


@pytest.mark.parametrize("optimizer,quantization,device,want", [
    ("auto", "none", "cpu", "adamw_torch_fused"),  # one kernel per tensor on a CPU
    ("auto", "4bit", "cpu", "adamw_torch_fused"),
    ("auto", "4bit", "cuda", "paged_adamw_8bit"),
    ("auto", "none", "cuda", "adamw_torch"),
    ("adamw_torch", "none", "cpu", "adamw_torch"),  # an explicit choice is kept
])
def test_optimizer_auto_resolution(optimizer, quantization, device, want):
    from finetune_gui.plan import Machine, resolve_plan
    cfg = RunConfig()
    cfg.apply_override(f"train.optimizer={optimizer}")
    cfg.apply_override(f"model.quantization={quantization}")
    cfg.apply_override(f"model.device={device}")
    machine = Machine(cuda=device == "cuda", cuda_bf16=True, has_bitsandbytes=True)
    assert resolve_plan(cfg, machine, base_params=10**6).optimizer == want
