"""Every request is bounded: a huge chat message or system prompt ends at once with a clear
message, and a long conversation is fitted into the model's context (oldest turns out)."""

from __future__ import annotations

import time

import pytest

from finetune_gui.chat import ChatEngine, FittedPrompt
from finetune_gui.config import MAX_PROMPT_CHARS, RunConfig
from finetune_gui.errors import ConfigError, FinetuneError


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The tiny Llama: a 512-token context."""
    config = RunConfig()
    config.model.name_or_path = str(tiny_model_dir)
    config.data.template = "alpaca"
    config.generation.max_new_tokens = 4
    return ChatEngine.from_config(config)


def test_a_240_kb_message_is_refused_before_any_work(engine):
    started = time.time()
    with pytest.raises(FinetuneError) as info:
        list(engine.stream([{"role": "user", "content": "tell me " * 30_000}]))
    assert time.time() - started < 2
    message = str(info.value)
    assert "(240,000 characters) cannot fit this model's context of 512 tokens" in message
    assert "shorten it" in message and len(message) < 300


def test_a_long_conversation_drops_its_oldest_turns(engine):
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"question {i}: " + "blue sky " * 20},
                    {"role": "assistant", "content": f"answer {i}: " + "green sea " * 20}]
    history.append({"role": "user", "content": "And the last question?"})
    fitted = engine.fit_prompt(history, max_new_tokens=4)
    assert 0 < fitted.dropped_turns < 12
    assert len(fitted.ids) <= 512 - 4
    text = engine.tokenizer.decode(fitted.ids)
    assert "And the last question?" in text and "question 11:" in text
    assert "question 0:" not in text
    whole = engine.fit_prompt(history[-3:], max_new_tokens=4)
    assert whole.dropped_turns == 0, "a short conversation is kept whole"
    answer = engine.answer(history)               # stream() fits by itself
    assert isinstance(answer, str)
    assert isinstance(engine.fit_prompt(history[-1:], 4), FittedPrompt)


def test_max_new_tokens_must_leave_room_for_the_question(engine):
    with pytest.raises(FinetuneError, match="leaves no room for the question"):
        engine.fit_prompt([{"role": "user", "content": "hi"}], max_new_tokens=510)


@pytest.mark.parametrize("key, limit", [("data.system_prompt", MAX_PROMPT_CHARS),
                                        ("data.custom_template", MAX_PROMPT_CHARS),
                                        ("data.path", 4_096), ("model.name_or_path", 4_096)])
def test_text_fields_are_bounded(key, limit):
    config = RunConfig()
    config.set(key, "{instruction}{output}" + "x" * (limit - 21))       # at the limit: fine
    started = time.time()
    with pytest.raises(ConfigError) as info:
        config.set(key, "x" * 10_000_000, source="UI")
    assert time.time() - started < 1
    message = str(info.value)
    assert f"UI: {key} is 10,000,000 characters long; at most {limit:,} are allowed" == message


def test_a_file_too_big_to_edit_in_the_page_is_refused_before_reading(tmp_path, monkeypatch):
    from finetune_gui.errors import DataError
    from finetune_gui.ui import data_view as dv
    path = tmp_path / "big.jsonl"
    row = '{"instruction": "q", "output": "a"}\n'
    path.write_text(row * 2000)
    assert len(dv.load_rows(path)) == 2000
    monkeypatch.setattr(dv, "MAX_EDIT_BYTES", 10_000)
    with pytest.raises(DataError, match=r"is 0\.\d MB: too big to edit in the page .* training "
                                        r"reads it as it is"):
        dv.load_rows(path)


def test_generation_stops_when_the_reader_goes_away(engine):
    """A closed page closes the stream: the model must not go on to max_new_tokens."""
    import dataclasses
    params = dataclasses.replace(engine.config.generation, max_new_tokens=400, temperature=0.0)
    calls = []
    original = engine.model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    engine.model.forward = counting
    try:
        stream = engine.stream([{"role": "user", "content": "Count to a thousand."}], params)
        next(stream)
        stream.close()                      # what Gradio does when the client disconnects
        steps = len(calls)
        time.sleep(0.5)
        assert len(calls) == steps, "no more forward passes after the reader left"
        assert steps < 100
    finally:
        engine.model.forward = original
