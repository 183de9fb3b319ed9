"""Raw text (continued pre-training) and packing: chunks keep document boundaries and lose
no token, a packed batch gives every example the loss it has alone, and both train."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import write_jsonl
from finetune_gui.batching import PackingCollator, PadCollator, tokenize_examples
from finetune_gui.data import Example, Turn, check_file, load_examples
from finetune_gui.documents import chunk_ids, document_chunks
from finetune_gui.errors import DataError
from finetune_gui.templates import IGNORE_INDEX, TemplateSpec, encode_example
from finetune_gui.training import TrainingJob

MANUAL = ("The Larkspur K7 kettle boils one litre in ninety seconds. Its base glows amber "
          "while heating and green when the water is ready. Descale it every forty brews "
          "with the blue citric sachet. The lid opens with the thumb lever on the handle. ")


@pytest.mark.parametrize("n, max_len, overlap", [
    (1, 8, 0), (8, 8, 0), (9, 8, 0), (50, 8, 0), (50, 8, 3), (50, 8, 100), (17, 2, 0),
    (200, 64, 16)])
def test_chunks_train_every_token_once_and_stay_in_the_document(n, max_len, overlap):
    ids = list(range(1000, 1000 + n))
    chunks = chunk_ids(ids, max_len, overlap)
    trained = []
    for piece, labels in chunks:
        assert 1 <= len(piece) <= max_len and len(labels) == len(piece)
        assert piece == ids[ids.index(piece[0]):ids.index(piece[0]) + len(piece)]  # contiguous
        assert labels[0] == IGNORE_INDEX  # a chunk's first token has no context to come from
        trained += [label for label in labels if label != IGNORE_INDEX]
    assert trained == ids[1:]  # every token but the document's first, once, in order
    if n > max_len and overlap:
        context = min(overlap, max_len // 2)
        assert chunks[1][0][:context] == chunks[0][0][-context:]


def test_text_folder_is_read_as_documents_with_bad_files_named(tmp_path):
    docs = tmp_path / "manual"
    (docs / "part2").mkdir(parents=True)
    (docs / "intro.md").write_text("# Larkspur K7\n\n" + MANUAL, encoding="utf-8")
    (docs / "part2" / "care.txt").write_text(MANUAL * 2, encoding="utf-8")
    (docs / ".notes.txt").write_text("hidden", encoding="utf-8")
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / "empty.txt").write_text("  \n", encoding="utf-8")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    report = check_file(docs)
    assert report.format == "text"
    assert [e.where for e in report.examples] == ["intro.md", "part2/care.txt"]
    assert report.examples[1].text == MANUAL * 2
    assert [str(e) for e in report.errors] == ["latin1.txt: not UTF-8 text (byte 4)"]
    assert report.warnings == ["empty.txt is empty: skipped"]
    with pytest.raises(DataError, match="raw text.*data.format"):
        check_file(docs, "alpaca")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="without .txt or .md files"):
        check_file(tmp_path / "none")


def test_text_rows_are_detected_and_bad_ones_named_by_line(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": MANUAL}, {"text": ""},
                                                 {"text": 7}, {"text": "Second doc."}])
    report = check_file(path)
    assert report.format == "text" and len(report.examples) == 2
    assert [str(e) for e in report.errors] == ["line 2: field 'text' is empty",
                                               "line 3: field 'text' must be text, got int"]
    row = report.examples[0].to_row()
    assert row["text"] == MANUAL and "messages" not in row


def test_documents_become_chunks_that_never_mix_documents(tmp_path, embedded_tokenizer):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(MANUAL * 3, encoding="utf-8")
    (folder / "b.txt").write_text("Zebra crossings are striped. " * 20, encoding="utf-8")
    examples = check_file(folder).examples
    dataset, truncated, dropped = tokenize_examples(examples, TemplateSpec(), embedded_tokenizer,
                                                    max_len=32, overlap=4)
    assert truncated == dropped == 0
    whole = [encode_example(e, TemplateSpec(), embedded_tokenizer).input_ids for e in examples]
    assert whole[0][-1] == embedded_tokenizer.eos_token_id  # a document ends with EOS
    per_doc = [document_chunks(e, embedded_tokenizer, 32, 4) for e in examples]
    assert len(dataset) == sum(len(c) for c in per_doc)
    for ids, chunks in zip(whole, per_doc):
        trained = [t for _, labels in chunks for t in labels if t != IGNORE_INDEX]
        assert trained == ids[1:]
    assert max(dataset["length"]) == 32


def test_packed_batch_gives_each_example_its_own_loss(tiny_model_dir, embedded_tokenizer):
    """Positions restarting at each example stop attention across the boundary: each
    example's per-token losses in the packed row equal its losses alone and in a padded
    batch, with sdpa and eager attention."""
    from transformers import AutoModelForCausalLM
    spec = TemplateSpec("alpaca")
    rows = []
    for i, text in enumerate(["Short.", "A somewhat longer answer with more words in it.",
                              "Medium length answer here."]):
        enc = encode_example(Example([Turn(f"Question {i}?", "", text)]), spec,
                             embedded_tokenizer)
        rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
    for attention in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
        model.config.use_cache = False
        alone = [_token_losses(model, {k: torch.tensor([v]) for k, v in row.items()})[0]
                 for row in rows]
        packed = PackingCollator()(rows)
        assert packed["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
        flat = _token_losses(model, {k: v for k, v in packed.items() if k != "attention_mask"})[0]
        padded = _token_losses(model, PadCollator(embedded_tokenizer.pad_token_id)(rows))
        start = 0
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            assert sum(x is not None for x in alone[i]) >= 3
            assert _close(flat[start:start + n - 1], alone[i]), attention
            assert _close(padded[i][:n - 1], alone[i]), attention
            start += n


def _token_losses(model, batch) -> list[list]:
    """Per row, the cross-entropy of each position's next token (None where masked)."""
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    out = []
    for b in range(labels.shape[0]):
        loss = F.cross_entropy(logits[b].float(), labels[b].clamp(min=0), reduction="none")
        out.append([float(v) if label != IGNORE_INDEX else None
                    for v, label in zip(loss, labels[b])])
    return out


def _close(got: list, want: list) -> bool:
    return len(got) == len(want) and all(
        (g is None) == (w is None) and (g is None or abs(g - w) < 1e-4)
        for g, w in zip(got, want))


def test_training_on_a_text_file_lowers_the_loss(tiny_config, tmp_path):
    manual = tmp_path / "manual.txt"
    manual.write_text(MANUAL * 12, encoding="utf-8")
    tiny_config.data.path = str(manual)
    tiny_config.train.max_seq_len = 48
    tiny_config.train.max_steps = 16
    state = TrainingJob(tiny_config).run()
    assert state.status == "finished", state.message
    assert any("raw text: 1 documents in" in line for line in state.log), state.log
    values = [loss for _, loss in state.loss]
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values


@pytest.mark.parametrize("replay_ratio", [0.0, 0.5])
def test_packed_training_logs_the_losses_of_padded_training(tiny_config, tmp_path,
                                                            replay_ratio):
    """Same rows, same order, same steps: packing changes the layout, not the learning
    (replay's soft targets included)."""
    tiny_config.data.replay_ratio = replay_ratio
    curves = {}
    for packing in (False, True):
        tiny_config.train.packing = packing
        tiny_config.train.output_dir = str(tmp_path / f"run-{packing}")
        tiny_config.train.max_steps = 4
        state = TrainingJob(tiny_config).run()
        assert state.status == "finished", state.message
        curves[packing] = [loss for _, loss in state.loss]
    assert curves[True] == pytest.approx(curves[False], rel=2e-3)


def test_a_run_holds_out_whole_documents(tiny_config, tmp_path):
    rows = [{"text": f"Document {i}. " + MANUAL} for i in range(10)]
    tiny_config.data.path = str(write_jsonl(tmp_path / "docs.jsonl", rows))
    tiny_config.data.val_split = 0.2
    split = load_examples(tiny_config.data)
    assert len(split.train) == 8 and len(split.validation) == 2
    assert {e.text for e in split.train}.isdisjoint({e.text for e in split.validation})
    assert json.loads(json.dumps(split.validation[0].to_row()))["text"].startswith("Document")


def test_data_tab_shows_documents_and_their_first_chunk(tmp_path, tiny_model_dir):
    """Loading a folder in the Data tab: a row per document, format text, the document
    count and chunks in the statistics, and the first chunk trained token by token."""
    from finetune_gui.config import RunConfig
    from finetune_gui.ui.app import AppOptions, build_app
    from finetune_gui.ui.jobs import JobRegistry
    from finetune_gui.ui.state import UserState
    from conftest import ui_handler
    folder = tmp_path / "manual"
    folder.mkdir()
    (folder / "kettle.md").write_text(MANUAL * 4, encoding="utf-8")
    (folder / "zebra.txt").write_text("Zebra crossings are striped.", encoding="utf-8")
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")),
                     JobRegistry())
    on_load = ui_handler(demo, "data_tab", "on_load")
    state = UserState(config=RunConfig())
    state.config.model.name_or_path = str(tiny_model_dir)
    state.config.train.max_seq_len = 64
    views = on_load(state, str(folder))
    summary, stats, spans = views[0], views[-2], views[-4]
    assert "**2 rows** · format **text**" in summary and "✅" in summary
    assert [row["source"] for row in state.rows] == ["kettle.md", "zebra.txt"]
    assert "**2 documents**" in stats and "chunks of at most max_seq_len = 64" in stats
    assert "**Row 1** is a document" in stats
    assert [kind for _, kind in spans] == ["masked", "trained"]  # the first token: context
    assert "kettle boils one litre" in spans[1][0]
    assert MANUAL * 4 not in "".join(text for text, _ in spans)  # one chunk, not the whole


def test_mixed_files_give_their_share_of_the_training_sequences(tiny_config, tmp_path,
                                                              embedded_tokenizer):
    """24 rows in data.path, a 5-row file mixed in at 25%: 8 of the 32 sequences come from
    it (each of its rows once or twice), and a manual chunked beside them counts chunks."""
    zebra = write_jsonl(tmp_path / "zebra.jsonl", [
        {"instruction": f"Zebra question {i}?", "output": f"Zebra fact {i}."} for i in range(5)])
    tiny_config.set("data.mix", [f"{zebra}@0.25"])
    job = TrainingJob(tiny_config)
    trainer = job.setup()
    texts = [embedded_tokenizer.decode(ids) for ids in trainer.train_dataset["input_ids"]]
    from_zebra = [t for t in texts if "Zebra question" in t]
    assert len(texts) == 32 and len(from_zebra) == 8
    uses = [sum(f"Zebra question {i}?" in t for t in from_zebra) for i in range(5)]
    assert sorted(uses) == [1, 1, 2, 2, 2]
    assert any("data mix: 24 from" in line and f"8 from {zebra} (25%, 5 available)" in line
               for line in job.state.log), job.state.log


@pytest.mark.parametrize("value, message", [
    (["a.jsonl"], "not PATH@SHARE"), (["a.jsonl@1.5"], "between 0 and 1"),
    (["a.jsonl@x"], "not PATH@SHARE"), (["a.jsonl@0.6", "b.jsonl@0.5"], "add up to 1.1"),
    ("@0.2", "not PATH@SHARE")])
def test_bad_mix_entries_are_refused_with_the_entry_named(value, message):
    from finetune_gui.config import RunConfig
    from finetune_gui.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        RunConfig().set("data.mix", value)
    config = RunConfig()
    config.set("data.mix", "x.jsonl@0.2, docs/manual@0.1")
    assert config.data.mix == ["x.jsonl@0.2", "docs/manual@0.1"]
