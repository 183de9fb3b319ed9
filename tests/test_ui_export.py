"""The Export tab's handlers on real runs of the tiny model: GGUF export and run comparison."""

from __future__ import annotations

import pytest

from finetune_gui.config import RunConfig
import gradio as gr
from conftest import ui_handler
from finetune_gui.training import TrainingJob
from finetune_gui.ui.app import build_app
from finetune_gui.ui.common import AppOptions
from finetune_gui.ui.state import UserState


@pytest.fixture
def two_runs(tiny_config, tmp_path):
    roots = []
    for lr in (1e-2, 2e-3):
        cfg = tiny_config.copy()
        cfg.train.learning_rate = lr
        cfg.train.max_steps = 4
        cfg.train.output_dir = str(tmp_path / "runs" / f"lr{lr}")
        assert TrainingJob(cfg).run().status == "finished"
        roots.append(cfg.train.output_dir)
    return roots


def test_export_tab_writes_gguf_and_compares_runs(two_runs, tmp_path):
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")))
    st = UserState(config=RunConfig())
    text = ui_handler(demo, "export_tab", "on_gguf")(st, two_runs[0], str(tmp_path / "out" / "m.gguf"), "f16",
                                    progress=lambda *a, **k: None)
    assert "m.gguf" in text and (tmp_path / "out" / "m.gguf").stat().st_size > 0
    assert (tmp_path / "out" / "Modelfile").exists()

    from finetune_gui.evaluation import EvalOptions, evaluate_run
    data = RunConfig.load(f"{two_runs[0]}/run.yaml").data.path
    for root in two_runs:   # each run evaluated on the same questions
        evaluate_run(root, EvalOptions(data=data, limit=4, max_new_tokens=4, general=False))
    figure, table, scores = ui_handler(demo, "export_tab", "on_compare")(st, two_runs)
    assert list(table["setting"]) == ["train.learning_rate"]
    assert figure.axes and len(figure.axes[0].lines) >= 2
    rouge = scores[scores.iloc[:, 1] == "ROUGE-L"]
    assert len(rouge) == 1 and rouge.iloc[0, 0] == "codes"
    assert all(value.endswith("%") for value in rouge.iloc[0, 2:])   # one figure per run
    with pytest.raises(gr.Error, match="two or more runs"):
        ui_handler(demo, "export_tab", "on_compare")(st, two_runs[:1])


def test_copy_as_command_offers_the_multi_gpu_form(tmp_path):
    import shlex
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    demo = build_app(AppOptions(root=str(root), runs_dir=str(tmp_path / "runs")))
    on_cli = ui_handler(demo, "app", "on_cli")
    st = UserState(config=RunConfig.load(root / "presets" / "quickstart.yaml"),
                   preset="presets/quickstart.yaml")
    st.config.set("lora.r", 4)
    text = on_cli(st)["value"]
    single, multi = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert shlex.split(single)[:5] == ["python", "-m", "finetune_gui", "train",
                                       "presets/quickstart.yaml"]
    assert "lora.r=4" in single and "lora.r=4" in multi
    assert multi.startswith("accelerate launch --config_file presets/accelerate/ddp.yaml")


def test_export_tab_serves_the_api_and_only_its_starter_sees_the_key(two_runs, tiny_model_dir,
                                                                     tmp_path):
    import re
    import socket
    openai = pytest.importorskip("openai")
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs"), shared=True,
                                model=str(tiny_model_dir)))
    owner = UserState(config=RunConfig(), visitor="user:alice")
    other = UserState(config=RunConfig(), visitor="user:bob")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = ui_handler(demo, "export_tab", "on_api_start")
    stop = ui_handler(demo, "export_tab", "on_api_stop")
    view = ui_handler(demo, "export_tab", "api_view")
    try:
        text, snippet = start(owner, two_runs[0], port)
        key = re.search(r"`(sk-[^`]+)`", text).group(1)
        assert f"http://127.0.0.1:{port}/v1" in text and key in snippet
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="lr0.01", max_tokens=4,
                                               messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content is not None
        with pytest.raises(gr.Error, match="already serves"):
            start(owner, two_runs[1], port + 1)
        seen, their_snippet = view(other)
        assert key not in seen and key not in their_snippet and "another user" in seen
        with pytest.raises(gr.Error, match="another visitor"):
            stop(other)
        text, snippet = stop(owner)
        assert "not running" in text and snippet == ""
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
    finally:
        demo.api.close()
