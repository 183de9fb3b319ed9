"""The LoRA tab's live count: exact against peft, from a loaded model or from config alone."""

from __future__ import annotations

import copy

import peft
import pytest

from finetune_gui.config import LoraConfig, RunConfig
from finetune_gui.lora import peft_config
from finetune_gui.ui.lora_count import (count_report, structure_from_config, structure_of,
                                        trainable_params)
from finetune_gui.ui.lora_tab import target_names
from finetune_gui.ui.state import UserState


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("settings", [
    dict(r=8), dict(r=4, target_modules=["q_proj", "v_proj"]), dict(r=8, use_dora=True),
    dict(r=2, bias="all"), dict(r=2, bias="lora_only"), dict(r=3, modules_to_save=["lm_head"]),
    dict(r=8, last_layers=1), dict(r=4, last_layers=1, target_modules=["q_proj"]),
    dict(r=4, last_layers=5),
])
def test_count_matches_peft_exactly(tiny_model, settings):
    lora = LoraConfig(**settings)
    wrapped = peft.get_peft_model(copy.deepcopy(tiny_model),
                                  peft_config(lora, tiny_model))
    expected, _ = wrapped.get_nb_trainable_parameters()
    assert trainable_params(structure_of(tiny_model), lora) == expected


def test_count_from_config_alone_equals_loaded(tiny_model, tiny_model_dir):
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    meta = structure_from_config(cfg.model)
    assert meta.names == structure_of(tiny_model).names
    assert trainable_params(meta, cfg.lora) == trainable_params(structure_of(tiny_model), cfg.lora)


def test_rank_change_changes_the_report(tiny_model, tiny_model_dir):
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    structure = structure_of(tiny_model)
    before = count_report(cfg, structure)
    cfg.set("lora.r", 4)
    after = count_report(cfg, structure)
    assert before.exact and after.trainable * 4 == before.trainable
    assert after.peak_bytes is None or after.peak_bytes > 0


def test_target_names_without_a_loaded_model(tiny_model_dir):
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    assert target_names(st) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                "up_proj", "down_proj"]


def test_estimator_counts_only_the_last_layers(tiny_model_dir):
    from finetune_gui.estimate import estimate
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    everything = estimate(cfg).trainable_params
    cfg.set("lora.last_layers", 1)          # the tiny Llama has 2 layers
    assert estimate(cfg).trainable_params * 2 == everything
