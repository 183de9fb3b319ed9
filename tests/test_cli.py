"""The command line: real subprocesses, one-line errors, no tracebacks."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, write_jsonl


def run_cli(*args, cwd=ROOT):
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    return proc


def assert_one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "malformed.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    write_jsonl(folder / "no_output.jsonl", [{"instruction": "a", "output": "b"},
                                             {"instruction": "only a question"}])
    (folder / "empty.jsonl").write_text("")
    (folder / "columns.csv").write_text("instruction,answer\nq,a\n")
    import gguf
    import numpy as np
    writer = gguf.GGUFWriter(str(folder / "weird.gguf"), arch="nosucharch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder


@pytest.mark.parametrize("file_name, message", [
    ("malformed.jsonl", "malformed.jsonl line 2: invalid JSON: Expecting value (column 17)"),
    ("no_output.jsonl", "no_output.jsonl line 2: missing field 'output'"),
    ("empty.jsonl", "empty.jsonl: the file is empty"),
    ("columns.csv", "columns.csv: CSV has columns answer, instruction; needs output"),
])
def test_bad_data_is_one_line_error(bad_files, tmp_path, file_name, message):
    proc = run_cli("train", "presets/quickstart.yaml", "--set", f"data.path={bad_files / file_name}",
                   "--set", f"train.output_dir={tmp_path / 'run'}")
    assert_one_line_error(proc, message)


@pytest.mark.parametrize("override, message", [
    ("lora.rank=4", "unknown key 'lora.rank'"),
    ("model.name_or_path=/no/such/model", "model folder not found: /no/such/model"),
    ("model.name_or_path={weird}", "weird.gguf: cannot load this GGUF file: GGUF model with "
                                    "architecture nosucharch is not supported"),
])
def test_bad_settings_are_one_line_errors(bad_files, tmp_path, override, message):
    override = override.format(weird=bad_files / "weird.gguf")
    proc = run_cli("train", "presets/quickstart.yaml", "--set", override,
                   "--set", f"train.output_dir={tmp_path / 'run'}")
    assert_one_line_error(proc, message)


def test_validate_lists_every_bad_row(bad_files):
    proc = run_cli("validate", bad_files / "no_output.jsonl")
    assert proc.returncode == 1
    assert "1 good, 1 bad" in proc.stdout
    assert "error: line 2: missing field 'output'" in proc.stdout


def test_preview_marks_masked_spans(tiny_model_dir, codes_data):
    proc = run_cli("preview", "presets/quickstart.yaml", "-n", "1",
                   "--set", f"model.name_or_path={tiny_model_dir}",
                   "--set", f"data.path={codes_data}", "--set", "data.template=alpaca")
    assert proc.returncode == 0, proc.stderr
    assert "«Below is an instruction" in proc.stdout
    assert "### Response:\n»Code 0 is blue 0 square.<|im_end|>" in proc.stdout


def test_train_then_chat_json(tiny_config, tmp_path):
    config_path = tmp_path / "run.yaml"
    tiny_config.save(config_path)
    proc = run_cli("train", config_path, "--set", "train.max_steps=6")
    assert proc.returncode == 0, proc.stderr
    assert "step 6/6 loss" in proc.stdout
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is code 1?\nWhat is code 2?\n")
    proc = run_cli("chat", tiny_config.train.output_dir, "--prompts-file", prompts,
                   "--prompt", "What is code 3?", "--json", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["What is code 3?", "What is code 1?", "What is code 2?"]
    assert all(isinstance(r["answer"], str) for r in rows)
    missing = run_cli("chat", tmp_path / "nowhere", "--prompt", "hi")
    assert_one_line_error(missing, "run folder not found")
