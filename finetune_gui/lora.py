"""Wrap a loaded base model with LoRA adapters so that gradients really reach them."""

from __future__ import annotations

from pathlib import Path

import peft
import torch

from .config import LoraConfig
from .errors import ConfigError
from .messages import Message
from .models import has_quantized_layers, linear_layer_names, text_config

CHECKPOINTING_KWARGS = {"use_reentrant": False}


def peft_config(cfg: LoraConfig, model=None) -> peft.LoraConfig:
    """peft's settings; with ``last_layers`` the ``model`` says where its last layers are
    (and which layers 'all-linear' means: peft takes layer indices only with a name list)."""
    layers, targets = None, cfg.target_modules
    num_layers = layer_count(model) if model is not None else None
    if cfg.last_layers and num_layers:
        layers = list(range(max(0, num_layers - cfg.last_layers), num_layers))
        if targets == "all-linear":
            targets = linear_layer_names(model)
    return peft.LoraConfig(
        task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=targets, bias=cfg.bias, use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora, modules_to_save=cfg.modules_to_save or None,
        layers_to_transform=layers)


def layer_count(model) -> int | None:
    return getattr(text_config(model.config), "num_hidden_layers", None)


def attach_lora(model, cfg: LoraConfig, *, gradient_checkpointing: bool):
    """Prepare the base (k-bit casting, checkpointing) and add trainable adapters.

    Checkpointing is always non-reentrant: the re-entrant variant silently drops the LoRA
    gradients when the inputs do not require grad (we saw all-zero gradients on CPU).
    """
    # Quantised layers, not transformers' load flags: a 4-bit base dequantised once on a CPU
    # still says is_loaded_in_4bit, and k-bit preparation would cast all of it to fp32.
    if has_quantized_layers(model):
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        model.enable_input_require_grads()
    try:
        model = peft.get_peft_model(model, peft_config(cfg, model))
    except ValueError as exc:
        text = str(exc).splitlines()[0]
        if cfg.last_layers and "layers_to_transform" in text:
            raise ConfigError(Message("lora.last_layers", why=text)) from None
        if "not found in the base model" in text or "Target modules" in text:
            raise ConfigError(Message("lora.no_targets", targets=repr(cfg.target_modules))) from None
        raise ConfigError(Message("lora.rejected", why=text)) from None
    return model


def trainable_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit packed weights at their real size."""
    trainable, total = model.get_nb_trainable_parameters()
    return int(trainable), int(total)


def adopt_init_adapter(config) -> Path | None:
    """With ``train.init_adapter``: that run's adapter folder, after giving ``config`` its
    LoRA settings (the weights must fit the same shapes). Refuses another base model."""
    from .runs import find_run
    if not config.train.init_adapter:
        return None
    paths, earlier = find_run(config.train.init_adapter)
    if earlier.model.name_or_path != config.model.name_or_path:
        raise ConfigError(Message("lora.init_other_base", run=config.train.init_adapter,
                                  theirs=repr(earlier.model.name_or_path),
                                  ours=repr(config.model.name_or_path)))
    config.lora = earlier.lora
    return Path(paths.adapter)


def load_adapter_weights(model, adapter_dir) -> None:
    """Copy a saved adapter's weights into the freshly attached one (same LoRA settings)."""
    from safetensors.torch import load_file
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    result = peft.set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(Message("lora.init_misfit", path=adapter_dir, missing=len(missing),
                                  unexpected=len(result.unexpected_keys)))
