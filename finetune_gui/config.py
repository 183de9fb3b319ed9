"""The run configuration: one typed source of truth for the CLI, the UI and saved runs.

Each field carries its help text and limits in ``metadata`` so that validation, the UI's
labels/tooltips and the docs all read the same words. Presets are sparse YAML laid over
the defaults; unknown keys are rejected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .messages import Message

EMBEDDED_MODEL = "smollm2-135m-instruct"
MAX_CONFIG_BYTES = 1_000_000
# Every text field is bounded: a path or a name needs far less, and a megabyte system
# prompt would make every data preview and every training example crawl.
MAX_TEXT_CHARS = 4_096
MAX_PROMPT_CHARS = 20_000


def _f(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
       min: float | None = None, max: float | None = None, min_exclusive: bool = False,
       max_chars: int = MAX_TEXT_CHARS, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text and limits kept in its metadata."""
    meta = {"help": help, "choices": choices, "min": min, "max": max,
            "min_exclusive": min_exclusive, "max_chars": max_chars}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name_or_path: str = _f(EMBEDDED_MODEL, help=(
        "Base model: 'smollm2-135m-instruct' (embedded, works offline), a Hub id, "
        "a local folder, or a path to a .gguf file."))
    quantization: str = _f("none", choices=("4bit", "8bit", "none"), help=(
        "How the frozen base weights are stored: 4bit = NF4 with double quantisation "
        "(QLoRA, least memory), 8bit = LLM.int8, none = 16/32-bit (fastest on CPU)."))
    compute_dtype: str = _f("auto", choices=("auto", "bfloat16", "float16", "float32"), help=(
        "Dtype for matrix work. auto = bfloat16 on GPUs and CPUs that support it, "
        "float16 on older GPUs, float32 otherwise."))
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), help=(
        "Where to run. auto = the first CUDA GPU if there is one, else the CPU."))
    trust_remote_code: bool = _f(False, help=(
        "Run Python code shipped with the model. Only for models you trust."))
    allow_pickle: bool = _f(False, help=(
        "Allow .bin/.pt weight files, which can run code when loaded. Off: safetensors only."))


@dataclass
class DataConfig:
    path: str = _f("presets/data/quillmore_train.jsonl", help=(
        "Training data: .jsonl, .json, .csv or .parquet rows; or raw text: a .txt/.md file "
        "or a folder of them; or a Hugging Face Hub dataset, org/name or org/name:split."))
    format: str = _f("auto", choices=("auto", "alpaca", "messages", "sharegpt", "preference",
                                      "kto", "text"), help=(
        "Row layout. alpaca = instruction/input/output; messages = OpenAI chat "
        "[{role, content}]; sharegpt = conversations [{from, value}]; preference = "
        "prompt/chosen/rejected (DPO, ORPO); kto = prompt/completion/label; text = raw "
        "documents (continued pre-training: no template, loss on every token). auto detects it."))
    template: str = _f("model", choices=("model", "alpaca", "chatml", "custom"), help=(
        "How a row becomes text. model = the tokenizer's own chat template (best for "
        "instruct models); alpaca = '### Instruction/### Response'; chatml = "
        "<|im_start|> blocks; custom = your own string."))
    custom_template: str = _f(
        "{instruction}\n{input}\n### Answer:\n{output}", help=(
            "Used when template = custom. Must contain {instruction} and {output}, "
            "may contain {input}; everything before {output} is the prompt."),
        max_chars=MAX_PROMPT_CHARS)
    system_prompt: str = _f("", help=(
        "System message added to every example (and used in chat). Empty: the "
        "template's default."), max_chars=MAX_PROMPT_CHARS)
    val_split: float = _f(0.0, min=0.0, max=0.5, help=(
        "Fraction of rows held out to measure eval loss (0 to 0.5). 0.1 is typical."))
    val_path: str = _f("", help="Optional separate validation file; overrides val_split.")
    eval_path: str = _f("", help=(
        "Questions the Evaluate step asks the finished run: any data file whose rows carry "
        "an answer and/or keywords. Empty: the run's own held-out rows (val_split)."))
    max_rows: int = _f(0, min=0, help="Use only the first N rows (0 = all). For quick trials.")
    mix: list[str] = _f(default_factory=list, help=(
        "More data files mixed into training, each as PATH@SHARE, e.g. "
        "presets/data/ai_basics_en.jsonl@0.2: that share of the training sequences comes "
        "from it (rows repeated or left out to make it so), data.path gives the rest. Any "
        "format the Data step reads, raw text included; the usual guard against forgetting "
        "when tuning on documents."))
    chunk_overlap: int = _f(0, min=0, max=100_000, help=(
        "Raw text: tokens of the previous chunk repeated at the start of the next as context "
        "(not trained twice). 0 = chunks follow each other; at most half of max_seq_len."))
    replay_ratio: float = _f(0.0, min=0.0, max=1.0, help=(
        "Add general questions answered by the base model itself, this many per training "
        "row (e.g. 0.3): the tuned model learns where the new knowledge ends and keeps what "
        "it knew. 0 = off."))


@dataclass
class LoraConfig:
    r: int = _f(16, min=1, max=1024, help=(
        "LoRA rank: size of the low-rank update. 8-64 is typical; higher learns more "
        "and costs more memory."))
    alpha: float = _f(32.0, min=0.0, min_exclusive=True, max=4096.0, help=(
        "LoRA scale numerator: the update is multiplied by alpha/r. Usually 2 x r."))
    dropout: float = _f(0.05, min=0.0, max=0.9, help=(
        "Dropout on the LoRA input during training (0 to 0.9). 0.05 is common."))
    target_modules: list[str] | str = _f("all-linear", help=(
        "Which linear layers get adapters: 'all-linear' or a list such as "
        "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]."))
    last_layers: int = _f(0, min=0, max=100_000, help=(
        "Adapt only the last N transformer layers (0 = all). Backpropagation then stops at "
        "the lowest adapted layer, so each step is cheaper, and the layers below keep the "
        "base's own weights."))
    bias: str = _f("none", choices=("none", "all", "lora_only"), help=(
        "Which biases to train as well. none is standard."))
    use_rslora: bool = _f(False, help=(
        "Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r; helps at high rank."))
    use_dora: bool = _f(False, help=(
        "DoRA: learn a magnitude vector per output as well; slightly better, slower."))
    modules_to_save: list[str] = _f(default_factory=list, help=(
        "Extra modules trained in full and saved with the adapter (e.g. [lm_head])."))


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/quickstart", help="Run folder: config, metrics, checkpoints, adapter.")
    method: str = _f("sft", choices=("sft", "dpo", "orpo", "kto"), help=(
        "sft = learn to give the answers (supervised); dpo / orpo = learn which of two "
        "answers is better from prompt/chosen/rejected rows; kto = the same from answers "
        "labelled good or bad. Preference methods use TRL's trainers."))
    beta: float = _f(0.1, min=0.0, min_exclusive=True, max=100.0, help=(
        "Preference methods: how far the tuned model may move from the reference (dpo, kto: "
        "the KL weight; orpo: the weight of the odds-ratio term). 0.1 is typical."))
    sft_weight: float = _f(0.0, min=0.0, max=100.0, help=(
        "dpo: also learn the chosen answers themselves, with this weight (the RPO recipe; "
        "1 is typical). Keeps the chosen answers likely, where plain DPO can lower both "
        "answers and let the model degenerate. 0 = plain DPO."))
    init_adapter: str = _f("", help=(
        "Start from this run's adapter (a run folder or an adapter folder), e.g. an SFT run "
        "before DPO. Its LoRA settings are used; the preference reference is that adapter."))
    epochs: float = _f(3.0, min=0.0, min_exclusive=True, max=1000.0, help=(
        "Passes over the training data. 1-5 is typical; small data may need more."))
    max_steps: int = _f(0, min=0, help="Stop after this many optimizer steps (0 = use epochs).")
    learning_rate: float = _f(2e-4, min=0.0, min_exclusive=True, max=1.0, help=(
        "Peak learning rate. 1e-4 to 5e-4 is typical for LoRA; higher for tiny data."))
    batch_size: int = _f(4, min=1, max=4096, help="Examples per device per step.")
    grad_accum: int = _f(1, min=1, max=4096, help=(
        "Steps whose gradients are summed before one update: effective batch = "
        "batch_size x grad_accum."))
    max_seq_len: int = _f(512, min=8, max=1_048_576, help=(
        "Longest example in tokens; longer ones are cut (and counted)."))
    processes: int = _f(1, min=1, max=64, help=(
        "Processes to train with from the app. 1 = inside the app. More = the app starts "
        "`accelerate launch` with that many processes (one per GPU; with no GPU, CPU "
        "processes over gloo) and follows the run folder."))
    gradient_checkpointing: bool = _f(False, help=(
        "Recompute activations in the backward pass: much less memory, ~30% slower."))
    lr_scheduler: str = _f("cosine", choices=(
        "cosine", "linear", "constant", "constant_with_warmup"), help="Learning-rate schedule.")
    warmup_ratio: float = _f(0.03, min=0.0, max=0.5, help=(
        "Fraction of steps spent ramping the learning rate up from 0."))
    weight_decay: float = _f(0.0, min=0.0, max=1.0, help="AdamW weight decay on LoRA weights.")
    max_grad_norm: float = _f(1.0, min=0.0, help="Clip gradients to this norm (0 = off).")
    optimizer: str = _f("auto", choices=(
        "auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
        "paged_adamw_32bit"), help=(
        "auto = paged 8-bit AdamW for QLoRA on a GPU, fused AdamW on a CPU, plain AdamW "
        "otherwise."))
    precision: str = _f("auto", choices=("auto", "bf16", "fp16", "fp32"), help=(
        "Mixed precision for training. auto = bf16 where the hardware supports it."))
    speedups: str = _f("all", choices=("off", "safe", "all"), help=(
        "Training speed-ups (finetune_gui.speedups). safe = the same maths in fewer passes "
        "over memory: fused LoRA step, answer-only head (TRL's too, for preference methods "
        "on a CPU), a batch's shared prompt start computed once, fast dropout masks, C++ "
        "kernels on a CPU, the frozen lower layers' outputs kept on a CPU, a 4-bit base "
        "dequantised once on a CPU; all = also Liger kernels on CUDA; off = the libraries' "
        "own code everywhere."))
    fused_lora: str = _f("auto", choices=("auto", "on", "off"), help=(
        "Run each plain LoRA layer's training step as one fused operation: the same maths "
        "with fewer passes over memory (about 1.25x faster on CPU). auto = as speedups says; "
        "off = peft's own path."))
    shared_prefix: str = _f("auto", choices=("auto", "on", "off"), help=(
        "Compute the start every row of a batch shares (the template's system prompt and "
        "turn header) once per batch instead of once per row: the same results with fewer "
        "tokens through the model. auto = as speedups says; off = every row whole."))
    frozen_bottom: str = _f("auto", choices=("auto", "on", "off"), help=(
        "On a CPU, with adapters on the last layers only: keep what the frozen layers below "
        "them output for each row after the first pass (in RAM, at most 2 GiB), so later "
        "epochs start at the first trained layer: the same results, a third less work for "
        "the quickstart. auto = as speedups says; off = all layers every time."))
    cpu_kernels: str = _f("auto", choices=("auto", "on", "off"), help=(
        "On a CPU, run the loss, norms, SwiGLU, attention softmax and dropout masks as C++ "
        "kernels built once for this machine (about 30 s, needs a C++ compiler): the same "
        "results in fewer passes over memory. auto = as speedups says; off, or no compiler "
        "= PyTorch's own ops."))
    group_by_length: bool = _f(True, help=(
        "Batch examples of similar length together so little compute is spent on padding."))
    packing: bool = _f(False, help=(
        "Pack each batch's examples into one sequence without padding: no attention across "
        "their boundaries, positions restart at each example, the same loss. Supervised "
        "methods (sft) only."))
    neftune_noise_alpha: float = _f(0.0, min=0.0, max=50.0, help=(
        "NEFTune: add uniform noise of this scale to the input embeddings while training "
        "(5 is typical); a regulariser that can help answers generalise. 0 = off."))
    logging_steps: int = _f(1, min=1, help="Log loss every N optimizer steps.")
    eval_steps: int = _f(0, min=0, help="Measure eval loss every N steps (0 = once per epoch).")
    early_stopping_patience: int = _f(0, min=0, max=1000, help=(
        "Stop when the eval loss has not improved for N evaluations in a row, and keep the "
        "adapter of the best evaluation. Needs held-out rows (data.val_split). 0 = off."))
    save_steps: int = _f(50, min=1, help="Save a resumable checkpoint every N steps.")
    save_total_limit: int = _f(2, min=1, help="Keep only the newest N checkpoints.")
    seed: int = _f(42, min=0, help="Random seed for shuffling, the split and LoRA init.")


@dataclass
class GenerationConfig:
    max_new_tokens: int = _f(256, min=1, max=32768, help="Longest answer in tokens.")
    temperature: float = _f(0.0, min=0.0, max=5.0, help=(
        "Randomness. 0 = greedy (deterministic); 0.7 is a common creative setting."))
    top_p: float = _f(0.9, min=0.0, min_exclusive=True, max=1.0, help=(
        "Sample only from the smallest set of tokens whose probability adds to top_p."))
    top_k: int = _f(50, min=0, help="Sample only from the k most likely tokens (0 = off).")
    repetition_penalty: float = _f(1.1, min=0.5, max=3.0, help=(
        ">1 discourages repeating tokens already in the text."))


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    # ---- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every setting by its dotted name ('lora.r': 16), for diffs and comparisons."""
        return {f"{section}.{f.name}": getattr(getattr(self, section), f.name)
                for section in SECTIONS for f in dataclasses.fields(getattr(self, section))}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically so that a crash never leaves half a config behind."""
        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def from_dict(cls, data: dict | None, *, source: str = "config") -> "RunConfig":
        cfg = cls()
        if data is None:
            return cfg
        if not isinstance(data, dict):
            raise ConfigError(Message("cfg.not_sections", source=source, kind=type(data).__name__))
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(Message("cfg.unknown_section", source=source,
                                          section=str(section)[:80], known=", ".join(SECTIONS)))
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(Message("cfg.section_mapping", source=source, section=section))
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, source=source)
        return cfg

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> "RunConfig":
        cfg = cls.from_dict(read_yaml(Path(path)), source=str(path))
        for item in overrides or []:
            cfg.apply_override(item)
        return cfg

    # ---- edits ---------------------------------------------------------------------
    def set(self, dotted: str, value: Any, *, source: str = "config") -> None:
        """Set ``section.key`` after checking the key exists and the value fits."""
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(Message("cfg.unknown_key_form", source=source,
                                      name=str(dotted)[:80]))
        obj = getattr(self, section)
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if key not in fields:
            close = ", ".join(f"{section}.{k}" for k in fields if k.startswith(key[:3]))
            raise ConfigError(Message("cfg.unknown_key_hint" if close else "cfg.unknown_key",
                                      source=source, name=str(dotted)[:80], close=close))
        setattr(obj, key, coerce_value(f"{section}.{key}", fields[key], value, obj, source))

    def apply_override(self, item: str) -> None:
        """Apply one ``--set section.key=value``; the value is parsed as YAML."""
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected section.key=value")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value '{raw}': "
                              f"{str(exc).splitlines()[0]}") from None
        self.set(key.strip(), value, source="--set")

    def copy(self) -> "RunConfig":
        return RunConfig.from_dict(self.to_dict())

    def overrides_from(self, base: "RunConfig") -> list[str]:
        """``section.key=value`` items that turn ``base`` into this config."""
        items = []
        for section in SECTIONS:
            mine, theirs = getattr(self, section), getattr(base, section)
            for f in dataclasses.fields(mine):
                value = getattr(mine, f.name)
                if value != getattr(theirs, f.name):
                    text = yaml.safe_dump(value, default_flow_style=True, width=10_000,
                                          allow_unicode=True).strip()
                    text = text.removesuffix("...").strip()
                    items.append(f"{section}.{f.name}={text}")
        return items

    def cli_command(self, preset: str = "presets/quickstart.yaml") -> str:
        """The shell command that trains exactly this config, as overrides of ``preset``."""
        parts = ["python", "-m", "finetune_gui", "train", preset]
        for item in self.overrides_from(RunConfig.load(preset)):
            parts += ["--set", item]
        return " ".join(shlex.quote(p) for p in parts)


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}


def field_info(dotted: str) -> dataclasses.Field:
    """The dataclass field behind ``section.key``: its help text and limits."""
    section, _, key = dotted.partition(".")
    cls = {"model": ModelConfig, "data": DataConfig, "lora": LoraConfig,
           "train": TrainConfig, "generation": GenerationConfig}[section]
    return {f.name: f for f in dataclasses.fields(cls)}[key]


def field_help(dotted: str) -> str:
    return field_info(dotted).metadata["help"]


def coerce_value(name: str, f: dataclasses.Field, value: Any, owner: Any, source: str) -> Any:
    """Check ``value`` against the field's type and limits; return it in the field's type."""
    hints = typing.get_type_hints(type(owner))
    want = hints[f.name]
    meta = f.metadata
    where = f"{source}: {name}"
    if name == "lora.target_modules":
        value = _coerce_targets(where, value)
    elif name == "data.mix":
        value = [f"{path}@{share:g}" for path, share in parse_mix(value, where)]
    elif want is bool:
        if not isinstance(value, bool):
            raise ConfigError(Message("cfg.bool", where=where, got=_shown(value)))
    elif want is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise ConfigError(Message("cfg.int", where=where, got=_shown(value)))
        value = int(value)
    elif want is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(Message("cfg.number", where=where, got=_shown(value))) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(Message("cfg.number", where=where, got=_shown(value)))
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(Message("cfg.finite", where=where, got=_shown(value)))
    elif want is str:
        if value is None:
            value = ""
        if isinstance(value, bool) and meta["choices"] and "off" in meta["choices"]:
            # YAML reads a bare off/on as false/true (and configs saved when fused_lora and
            # cpu_kernels were switches hold true/false)
            value = "off" if not value else "on" if "on" in meta["choices"] else value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not meta["choices"]:
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(Message("cfg.text", where=where, got=_shown(value)))
        if len(value) > meta["max_chars"]:
            raise ConfigError(Message("cfg.text_long", where=where, n=f"{len(value):,}",
                                          most=f"{meta['max_chars']:,}"))
    elif typing.get_origin(want) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(Message("cfg.names", where=where, got=_shown(value)))
        if len(value) > 1_000 or any(len(v) > MAX_TEXT_CHARS for v in value):
            raise ConfigError(Message("cfg.names_long", where=where))
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(Message("cfg.choice", where=where, choices=", ".join(meta["choices"]),
                                  got=_shown(value)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta["min"], meta["max"]
        if lo is not None and (value < lo or (meta["min_exclusive"] and value == lo)):
            op = ">" if meta["min_exclusive"] else ">="
            raise ConfigError(Message("cfg.min", where=where, op=op, limit=f"{lo:g}", got=f"{value:g}"))
        if hi is not None and value > hi:
            raise ConfigError(Message("cfg.max", where=where, limit=f"{hi:g}", got=f"{value:g}"))
    return value


def parse_mix(value: Any, where: str = "data.mix") -> list[tuple[str, float]]:
    """(path, share) of each ``PATH@SHARE`` entry (a list, or text with commas); the
    shares are fractions of the training sequences and leave some for data.path."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or len(value) > 32 or not all(
            isinstance(v, str) and len(v) <= MAX_TEXT_CHARS for v in value):
        raise ConfigError(Message("cfg.mix_list", where=where, got=_shown(value)))
    mix = []
    for entry in value:
        path, at, share_text = entry.strip().rpartition("@")
        try:
            share = float(share_text) if at and path.strip() else math.nan
        except ValueError:
            share = math.nan
        if not 0 < share < 1:
            raise ConfigError(Message("cfg.mix_entry", where=where, got=_shown(entry)))
        mix.append((path.strip(), share))
    if sum(share for _, share in mix) >= 1:
        raise ConfigError(Message("cfg.mix_total", where=where,
                                  total=f"{sum(share for _, share in mix):g}"))
    return mix


def _shown(value: Any, limit: int = 80) -> str:
    """A value as an error message quotes it: never the whole of a huge one."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _coerce_targets(where: str, value: Any) -> list[str] | str:
    if len(value if isinstance(value, (str, list)) else ()) > MAX_TEXT_CHARS:
        raise ConfigError(Message("cfg.text_long", where=where, n=f"{len(value):,}",
                                  most=f"{MAX_TEXT_CHARS:,}"))
    if isinstance(value, str):
        text = value.strip()
        if text == "all-linear":
            return text
        value = [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(Message("cfg.targets", where=where, got=_shown(value)))
    return [v.strip() for v in value]


def read_yaml(path: Path) -> Any:
    """Read a YAML file safely: size-capped, no Python objects, one document."""
    if not path.is_file():
        raise ConfigError(Message("cfg.file_not_found", path=path))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(Message("cfg.file_large", path=path, kb=MAX_CONFIG_BYTES // 1000))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(Message("file.not_utf8", path=path)) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _count_nodes(node) > 10_000:
                raise ConfigError(Message("cfg.yaml_large", source=source))
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark:
            raise ConfigError(Message("cfg.yaml_line", source=source, where=f"line {mark.line + 1}",
                                      why=problem)) from None
        raise ConfigError(Message("cfg.yaml", source=source, why=problem)) from None


def _count_nodes(node: yaml.Node, limit: int = 10_001) -> int:
    """Count nodes with aliases expanded, stopping early (defeats 'billion laughs')."""
    count, stack = 0, [node]
    while stack and count < limit:
        current = stack.pop()
        count += 1
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                stack.extend((k, v))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return count


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file 0600: keep the mode the file had, or the usual one.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
