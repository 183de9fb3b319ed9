import json

import pytest

from finetune_gui.config import DataConfig
from finetune_gui.data import check_file, load_examples, save_rows
from finetune_gui.errors import DataError

from conftest import ROOT, write_jsonl

ALPACA = {"instruction": "Say hi", "input": "", "output": "hi"}


@pytest.mark.parametrize("name", ["ai_basics_en.jsonl", "ai_basics_zh.jsonl",
                                  "quillmore_train.jsonl", "quillmore_train_9ways.jsonl",
                                  "harrowgate_train.jsonl", "harrowgate_train_9ways.jsonl"])
def test_shipped_datasets_are_clean(name):
    report = check_file(ROOT / "presets" / "data" / name)
    assert report.format == "alpaca"
    assert not report.errors and not report.warnings
    assert len(report.examples) >= 100


def test_shipped_manual_is_raw_text_in_two_languages():
    report = check_file(ROOT / "presets" / "data" / "larkspur_manual")
    assert report.format == "text" and not report.errors and not report.warnings
    assert [e.where for e in report.examples] == ["en.md", "zh.md"]
    assert "thirty months" in report.examples[0].text and "三十个月" in report.examples[1].text


def test_shipped_manual_questions_ask_what_the_manual_says():
    """The documents preset's data: its questions teach half of the manual's facts, and every
    held-out question asks about a fact the manual states, without giving the answer away."""
    import json

    from finetune_gui.evaluation.rows import read_eval_rows
    data = ROOT / "presets" / "data"
    taught = check_file(data / "larkspur_qa_train.jsonl")
    assert taught.format == "alpaca" and not taught.errors and not taught.warnings
    manual = (data / "larkspur_manual" / "en.md").read_text(encoding="utf-8").lower()
    rows = read_eval_rows(data / "larkspur_eval.jsonl")
    raw = [json.loads(line) for line in (data / "larkspur_eval.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and sorted({r["fact_id"] for r in raw}) == list(range(1, 25))
    assert {r["fact_id"] for r in raw if r["in_qa"]} == set(range(1, 25, 2))
    for row in rows:
        assert row.keywords and all(k.lower() in manual for k in row.keywords), row.where
        assert not any(k.lower() in row.prompt.lower() for k in row.keywords), row.where


def test_shipped_fact_sheets_state_every_fact_of_the_manual_in_each_sheet(monkeypatch):
    """The manual restated six ways (raw-text rows): each sheet names every fact's keyword,
    the sheets are rebuilt byte for byte by their script, and the script's leak check holds."""
    from finetune_gui.evaluation.rows import read_eval_rows
    data = ROOT / "presets" / "data"
    report = check_file(data / "larkspur_manual_rewrites.jsonl")
    assert report.format == "text" and not report.errors and not report.warnings
    assert len(report.examples) == 6
    rows = read_eval_rows(data / "larkspur_eval.jsonl")
    for sheet in report.examples:
        assert all(any(k.lower() in sheet.text.lower() for k in row.keywords) for row in rows)
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from make_manual_rewrites import build_sheets
    assert [e.text for e in report.examples] == build_sheets()   # SystemExit on a leak


@pytest.mark.parametrize("row, fmt", [
    (ALPACA, "alpaca"),
    ({"messages": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "hello"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "hi"},
                        {"from": "gpt", "value": "hello"}]}, "sharegpt"),
])
def test_formats_are_detected(tmp_path, row, fmt):
    report = check_file(write_jsonl(tmp_path / "d.jsonl", [row, row | {}]))
    assert report.format == fmt
    assert len(report.examples) == 2
    assert report.examples[0].turns[0].output in ("hi", "hello")
    assert report.warnings == ["line 2 duplicates line 1"]


def test_every_bad_row_is_listed_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(ALPACA),
             '{"instruction": "x", "output": ',          # 2: invalid JSON
             json.dumps({"instruction": "x"}),            # 3: missing output
             json.dumps({"instruction": "x", "output": "  "}),  # 4: empty
             json.dumps({"instruction": 5, "output": "y"}),     # 5: wrong type
             json.dumps({"messages": [{"role": "user", "content": "a"},
                                      {"role": "assistant", "content": "b"}]}),  # 6: mixed
             "", json.dumps(ALPACA | {"output": "other"})]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"instruction": "\xff"}\n')
    report = check_file(path)
    assert [str(e) for e in report.errors] == [
        "line 2: invalid JSON: Expecting value (column 32)",
        "line 3: missing field 'output'",
        "line 4: field 'output' is empty",
        "line 5: field 'instruction' must be text, got int",
        "line 6: row is in messages format but the file is alpaca: one format per file",
        "line 9: not UTF-8 text (byte 18)",
    ]
    assert len(report.examples) == 2
    with pytest.raises(DataError, match=r"bad.jsonl line 2: invalid JSON.*and 5 more bad rows"):
        report.raise_if_bad()


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\x00\x01\x02binary", "looks like a binary file"),
    (b"\n\n", "the file has no rows"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        check_file(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        check_file(tmp_path / "nope.jsonl")
    (tmp_path / "a.docx").write_text("hi")
    with pytest.raises(DataError, match=r"unsupported file type '.docx'.*\.txt/\.md for raw text"):
        check_file(tmp_path / "a.docx")


def test_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA).encode() + b"\n")
    assert len(check_file(path).examples) == 1


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,input,output\n"Say, hi","","line one\nline two"\nA,,B\n')
    report = check_file(path)
    assert report.examples[0].turns[0].instruction == "Say, hi"
    assert report.examples[0].turns[0].output == "line one\nline two"


def test_csv_without_needed_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(DataError, match="cannot tell the format from its fields"):
        check_file(path)
    path.write_text("instruction,answer\nq,a\n")
    with pytest.raises(DataError, match="CSV has columns answer, instruction; needs output"):
        check_file(path)


def test_parquet_and_json_array(tmp_path):
    import pandas as pd
    pd.DataFrame([ALPACA, ALPACA | {"output": "yo"}]).to_parquet(tmp_path / "d.parquet")
    assert len(check_file(tmp_path / "d.parquet").examples) == 2
    (tmp_path / "d.json").write_text(json.dumps([ALPACA, {"instruction": "x"}]))
    report = check_file(tmp_path / "d.json")
    assert [str(e) for e in report.errors] == ["item 2: missing field 'output'"]


def test_chat_structure_errors(tmp_path):
    rows = [{"messages": [{"role": "assistant", "content": "x"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            {"messages": [{"role": "user", "content": "a"}]},
            {"conversations": [{"from": "robot", "value": "a"}]}]
    report = check_file(write_jsonl(tmp_path / "c.jsonl", rows), "messages")
    reasons = [e.reason for e in report.errors]
    assert reasons[0].startswith("messages[1]: assistant message without a user message")
    assert reasons[1] == "messages[2]: two user messages in a row"
    assert reasons[2] == "'messages' has no assistant answer to learn from"
    assert reasons[3] == "row is in sharegpt format but the file is messages: one format per file"


def test_validation_split_is_deterministic(tmp_path):
    rows = [ALPACA | {"output": f"o{i}"} for i in range(20)]
    cfg = DataConfig(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), val_split=0.2)
    a, b = load_examples(cfg, seed=1), load_examples(cfg, seed=1)
    assert len(a.train) == 16 and len(a.validation) == 4
    assert [e.where for e in a.validation] == [e.where for e in b.validation]


def test_save_rows_keeps_a_backup(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [ALPACA])
    original = path.read_text()
    backup = save_rows(path, [ALPACA | {"output": "changed"}])
    assert backup.read_text() == original
    assert "changed" in path.read_text()


def test_a_streamed_file_gives_the_rows_of_a_fully_loaded_one(tmp_path):
    """JSON Lines is checked line by line from the disk; the same text read whole (JSON
    Lines saved as .json) gives the same examples, errors and duplicates, and a check that
    keeps no examples still counts them all."""
    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i % 7}", "input": "x" * (i % 3)})
             for i in range(2500)]
    lines[700] = '{"instruction": "broken"'
    lines[1900] = lines[1899]
    text = "\ufeff" + "\n".join(lines) + "\n\n"
    streamed, whole = tmp_path / "rows.jsonl", tmp_path / "rows.json"
    for path in (streamed, whole):
        path.write_text(text, encoding="utf-8")
    a, b = check_file(streamed), check_file(whole)
    assert [(e.where, e.turns) for e in a.examples] == [(e.where, e.turns) for e in b.examples]
    assert [str(e) for e in a.errors] == [str(e) for e in b.errors] == [
        "line 701: invalid JSON: Expecting ',' delimiter (column 25)"]
    assert a.warnings == b.warnings == ["line 1901 duplicates line 1900"]
    counted = check_file(streamed, keep_examples=False)
    assert counted.examples == [] and counted.good_rows == len(a.examples) == 2499
    assert (counted.rows_total, counted.bad_rows, counted.duplicates) == (2500, 1, 1)


def test_sentencepiece_segments_tokenise_as_the_whole_text(tmp_path):
    """A Llama 2-style tokenizer puts '▁' at the start of every encode call: segments after
    the first must not get it, or training sees tokens llama.cpp and the chat template never
    produce for the same text."""
    from conftest import llama2_style_tokenizer
    from finetune_gui.data import Example, Turn
    from finetune_gui.templates import (TemplateSpec, adds_space_prefix, encode_segments,
                                        segments)
    tokenizer = llama2_style_tokenizer(tmp_path)
    assert adds_space_prefix(tokenizer)
    spec = TemplateSpec(name="alpaca")
    for turn in (Turn("Say hi.", "", "Hello there."), Turn("Sum?", "2 and 3", " 5, done"),
                 Turn("Q1", "", "naïve 你好")):
        parts = segments(Example([turn]), spec, tokenizer)
        whole = tokenizer.encode("".join(p.text for p in parts), add_special_tokens=False)
        encoded = encode_segments(parts, tokenizer)
        assert encoded.input_ids[1:] == whole, turn          # after the BOS
        assert encoded.input_ids[0] == tokenizer.bos_token_id
        prompt = encode_segments(parts[:-1], tokenizer).input_ids
        assert encoded.trained_tokens == len(encoded.input_ids) - len(prompt)
