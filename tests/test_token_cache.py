"""Tokenised data cached by content, large files streamed through ``datasets``, and Hub
dataset ids: the same tokens every way, a second run that skips tokenisation, and a clear
answer without network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from finetune_gui import data_stream, token_cache, training_data
from finetune_gui.batching import tokenize_examples, write_tokens
from finetune_gui.config import RunConfig
from finetune_gui.data import check_file
from finetune_gui.data_stream import load_split, streams
from finetune_gui.errors import DataError, FinetuneError
from finetune_gui.hub_data import is_hub_id
from finetune_gui.models import load_tokenizer
from finetune_gui.templates import TemplateSpec
from finetune_gui.training_data import TrainingData
from finetune_gui.ui.data_view import load_rows
from finetune_gui.ui.workspace import PathNotAllowed, Workspace
from tests.conftest import write_jsonl


def rows(n: int = 40) -> list[dict]:
    return ([{"instruction": f"What is code {i}?", "input": "" if i % 4 else "ctx",
              "output": f"Code {i} is blue {i % 3} square. " * (1 + i % 5)} for i in range(n)]
            + [{"instruction": "long", "output": "word " * 400}])  # cut by max_seq_len


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "tokens"
    monkeypatch.setattr(token_cache, "tokens_root", lambda: folder)
    return folder


@pytest.fixture
def config(tiny_config, tmp_path) -> RunConfig:
    tiny_config.data.path = str(write_jsonl(tmp_path / "rows.jsonl", rows()))
    tiny_config.data.val_split = 0.2
    return tiny_config


def tokenise(cfg: RunConfig) -> tuple[dict, dict | None, list[str]]:
    """The training and held-out tokens of a run's data (as the job tokenises them) and
    what it logged."""
    logs: list[str] = []
    tokenizer = load_tokenizer(cfg.model)
    split = load_split(cfg.data, seed=cfg.train.seed)
    data = TrainingData(cfg, log=logs.append, phase=lambda _: None, run_root=Path("."),
                        writes=False)
    train, held, _, _ = data.sft(split, TemplateSpec.from_data_config(cfg.data), None,
                                 tokenizer)
    return train.to_dict(), held.to_dict() if held is not None else None, logs


def cache_keys(logs: list[str]) -> list[str]:
    return [line.split("key ")[1][:16] for line in logs if "key " in line]


def test_a_second_run_reads_the_cache_and_gets_the_same_tokens(config, cache_dir,
                                                               monkeypatch):
    train, held, logs = tokenise(config)
    assert any("cached (key" in line for line in logs), logs
    assert len(list(cache_dir.iterdir())) == 1

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")
    monkeypatch.setattr(training_data, "write_tokens", no_tokenising)
    again, held_again, logs = tokenise(config)
    assert any("from the cache" in line and "tokenisation skipped" in line for line in logs)
    assert (again, held_again) == (train, held)
    assert len(train["input_ids"]) == 33 and len(held["input_ids"]) == 8


def test_changed_content_or_settings_make_a_new_key(config, cache_dir, tmp_path):
    first = cache_keys(tokenise(config)[2])
    config.train.max_seq_len = 96
    second = cache_keys(tokenise(config)[2])
    write_jsonl(Path(config.data.path), rows()[:-1] + [{"instruction": "x", "output": "y"}])
    third = cache_keys(tokenise(config)[2])
    moved = tmp_path / "same-bytes-other-name.jsonl"
    moved.write_bytes(Path(config.data.path).read_bytes())
    config.data.path = str(moved)
    logs = tokenise(config)[2]
    assert len({*first, *second, *third}) == 3
    assert cache_keys(logs) == third and any("from the cache" in line for line in logs)


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "missing"])
def test_a_damaged_entry_is_built_again(config, cache_dir, damage):
    train, held, _ = tokenise(config)
    entry = next(cache_dir.iterdir())
    arrow = entry / "train.arrow"
    if damage == "truncate":
        arrow.write_bytes(arrow.read_bytes()[:-100])
    elif damage == "flip":
        raw = bytearray(arrow.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        arrow.write_bytes(bytes(raw))
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json", encoding="utf-8")
    else:
        arrow.unlink()
    (cache_dir / ".left-by-a-killed-run.partial").mkdir()  # never read as an entry
    again, held_again, logs = tokenise(config)
    assert any("cached (key" in line for line in logs), logs
    assert (again, held_again) == (train, held)


def test_the_cache_keeps_only_its_newest_entries(tmp_path):
    cache = token_cache.TokenCache(tmp_path, entries=2)

    def build(folder):
        return {"train": write_tokens([], folder / "train.arrow", TemplateSpec(), None, 8)[0]}, {}
    for key in ("a", "b", "c"):
        cache.put(key, build)
        time.sleep(0.02)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_streamed_rows_give_the_tokens_of_rows_in_memory(config, embedded_tokenizer,
                                                         tmp_path):
    config.data.max_rows = 37
    spec = TemplateSpec("alpaca")
    memory = load_split(config.data, seed=3, stream=False)
    streamed = load_split(config.data, seed=3, stream=True)
    assert isinstance(streamed.train, data_stream.ExampleRows)
    assert [e.where for e in streamed.train] == [e.where for e in memory.train]
    assert [e.where for e in streamed.validation] == [e.where for e in memory.validation]
    written, cut, lost = write_tokens(streamed.train, tmp_path / "t.arrow", spec,
                                      embedded_tokenizer, 64)
    built, cut2, lost2 = tokenize_examples(memory.train, spec, embedded_tokenizer, 64)
    assert written.features == built.features
    assert written.to_dict() == built.to_dict() and (cut, lost) == (cut2, lost2) != (0, 0)


def test_one_place_decides_what_is_streamed(tmp_path, monkeypatch):
    cfg = RunConfig().data
    cfg.path = str(write_jsonl(tmp_path / "big.jsonl", rows()))
    assert not streams(cfg)
    monkeypatch.setattr(data_stream, "STREAM_FROM_BYTES", 100)
    assert streams(cfg) and not streams(cfg, "dpo")
    (tmp_path / "doc.txt").write_text("words " * 100, encoding="utf-8")
    cfg.path = str(tmp_path / "doc.txt")
    assert not streams(cfg)
    cfg.path = "someorg/somedata:train"
    assert streams(cfg)


def test_a_streamed_file_names_its_bad_rows_by_line(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", rows()[:5] + [{"instruction": "no answer"}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{broken\n")
    cfg = RunConfig().data
    cfg.path = str(path)
    with pytest.raises(DataError, match=r"line 6: missing field 'output' \(and 1 more"):
        load_split(cfg, stream=True)


def test_a_hub_id_without_network_fails_at_once_naming_it(monkeypatch):
    started = time.monotonic()
    with pytest.raises(DataError, match="'someorg/somedata:train' from the Hugging Face Hub "
                                        r"\(no network"):
        check_file("someorg/somedata:train")
    from huggingface_hub import constants
    from finetune_gui import hub_data
    monkeypatch.setattr(hub_data, "hub_offline", lambda: False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # refused at once
    with pytest.raises(DataError, match="give the local path as data.path"):
        check_file("someorg/somedata")
    assert time.monotonic() - started < 15


def test_a_hub_dataset_is_read_through_datasets(monkeypatch, tmp_path):
    import datasets
    from finetune_gui import hub_data
    seen = []
    monkeypatch.setattr(hub_data, "hub_offline", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: seen.append(
        (name, split)) or datasets.Dataset.from_list(rows(3)[:3]))
    report = check_file("someorg/somedata:test")
    assert seen == [("someorg/somedata", "test")] and report.good_rows == 3
    assert report.examples[0].where == "row 1"


def test_a_local_folder_named_like_a_hub_id_is_read_locally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("someorg/somedata") and is_hub_id("someorg/somedata:train")
    (tmp_path / "someorg").mkdir()
    write_jsonl(tmp_path / "someorg" / "somedata", rows(2))
    assert not is_hub_id("someorg/somedata") and not is_hub_id("someorg/somedata:train")
    assert not is_hub_id("../etc") and not is_hub_id("/etc/passwd") and not is_hub_id("a/b/c")


def test_a_shared_app_takes_hub_ids_but_no_local_file_named_like_one(tmp_path):
    ws = Workspace.create(tmp_path, shared=True)
    config = RunConfig()
    config.data.path = "someorg/somedata:train"
    config.data.val_path = ""
    ws.check_config(config)  # a Hub dataset, as a Hub model is
    (tmp_path / "private").mkdir()
    write_jsonl(tmp_path / "private" / "rows", rows(2))
    for value in ("private/rows", "private/rows:train", "../private/rows"):
        config.data.path = value
        with pytest.raises(PathNotAllowed):
            ws.check_config(config)
    config.data.path = "someorg/somedata"
    config.data.mix = ["private/rows@0.2"]
    with pytest.raises(PathNotAllowed, match="data.mix"):
        ws.check_config(config)
    with pytest.raises(DataError, match="Hub dataset: training reads it as it is"):
        load_rows("someorg/somedata:train")  # the Data tab never downloads a whole dataset


def test_mix_files_are_cached_too(config, cache_dir, tmp_path, monkeypatch):
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"text": "general words " * 30}] * 3)
    config.data.mix = [f"{extra}@0.2"]
    train, _, logs = tokenise(config)
    assert len(list(cache_dir.iterdir())) == 2

    def no_reading(*args, **kwargs):
        raise AssertionError("read again")
    monkeypatch.setattr(training_data, "check_file", no_reading)
    again, _, logs = tokenise(config)
    assert again == train and sum("from the cache" in line for line in logs) == 2
    assert json.loads((next(cache_dir.iterdir()) / "meta.json").read_text())["parts"]


def test_a_bad_mix_file_is_not_cached(config, cache_dir, tmp_path):
    extra = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a",
                                                    "rejected": "b"}] * 3)
    config.data.mix = [f"{extra}@0.2"]
    with pytest.raises(FinetuneError, match="holds preference rows"):
        tokenise(config)
    assert len(list(cache_dir.iterdir())) == 1  # data.path's entry only, no partial left
