"""The OpenAI-compatible API, asked with the official ``openai`` client over real HTTP.

A tiny random Llama trained for a few steps is served by uvicorn on a free port; answers are
compared with ``ChatEngine.answer`` (what ``python -m finetune_gui chat`` prints).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, train_tiny
from finetune_gui.chat import ChatEngine
from finetune_gui.serving.http import BackgroundServer
from finetune_gui.serving.protocol import AnswerText, ApiError, parse_chat_request
from finetune_gui.serving.server import ModelServer, api_key_for, is_loopback, load_engine

openai = pytest.importorskip("openai")

KEY = "sk-test-0123456789"
PROMPTS = ["What is code 3?", "What is code 17?", "Write a haiku about rain."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def chat_answers(tiny_run) -> dict:
    """What ``chat`` answers, tuned and base, from an engine of its own."""
    engine = ChatEngine.from_run(tiny_run)
    return {"tuned": {p: engine.answer(user(p)) for p in PROMPTS},
            "base": {p: engine.answer(user(p), use_adapter=False) for p in PROMPTS},
            "prompt_tokens": {p: len(engine.prompt_ids(user(p))) for p in PROMPTS}}


@pytest.fixture(scope="module")
def served(tiny_run):
    engine, name = load_engine(tiny_run)
    background = BackgroundServer(ModelServer(engine, name, api_key=KEY), "127.0.0.1",
                                  free_port()).start()
    yield background
    background.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0, timeout=120)


def test_models_lists_the_run_and_its_base(served, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [served.server.name, served.server.name + ":base"]
    assert client.models.retrieve(served.server.name).id == served.server.name


def test_streamed_and_whole_answers_equal_chat(served, client, chat_answers):
    name = served.server.name
    for prompt in PROMPTS:
        pieces, finishes = [], []
        for chunk in client.chat.completions.create(model=name, messages=user(prompt),
                                                    stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finishes.append(chunk.choices[0].finish_reason)
        assert "".join(pieces) == chat_answers["tuned"][prompt]
        assert finishes[-1] in ("stop", "length") and set(finishes[:-1]) == {None}
        whole = client.chat.completions.create(model=name, messages=user(prompt))
        assert whole.choices[0].message.content == chat_answers["tuned"][prompt]
        assert whole.usage.prompt_tokens == chat_answers["prompt_tokens"][prompt]
        assert whole.usage.completion_tokens > 0


def test_base_model_id_answers_without_the_adapter(served, client, chat_answers):
    for prompt in PROMPTS[:2]:
        answer = client.chat.completions.create(model=served.server.name + ":base",
                                                messages=user(prompt))
        assert answer.choices[0].message.content == chat_answers["base"][prompt]
    assert chat_answers["base"] != chat_answers["tuned"]


def test_max_tokens_and_stop_strings(served, client, chat_answers):
    name = served.server.name
    short = client.chat.completions.create(model=name, messages=user("What is code 3?"),
                                           max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2
    assert chat_answers["tuned"]["What is code 3?"].startswith(short.choices[0].message.content)
    full = chat_answers["tuned"]["What is code 3?"]
    stop = " " + full.split()[2]          # the answer's third word
    expected = full[:full.index(stop)].rstrip()
    cut = client.chat.completions.create(model=name, messages=user("What is code 3?"),
                                         stop=[stop, "never in it"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=name, messages=user("What is code 3?"), stop=stop, stream=True) if c.choices)
    assert streamed == expected


def test_stream_usage_chunk(served, client, chat_answers):
    chunks = list(client.chat.completions.create(
        model=served.server.name, messages=user("What is code 3?"), stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == chat_answers["prompt_tokens"]["What is code 3?"]


def test_wrong_or_missing_key_gets_401(served):
    for key in ("sk-wrong-key-000", ""):
        bad = openai.OpenAI(base_url=served.base_url, api_key=key or "x", max_retries=0)
        if not key:
            bad = openai.OpenAI(base_url=served.base_url, api_key="x", max_retries=0,
                                default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model=served.server.name, messages=user("hi"))
        assert err.value.status_code == 401
        assert err.value.body["type"] == "authentication_error"
    raw = httpx.get(served.base_url + "/models")
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("change, status, param", [
    ({"model": "gpt-4o"}, 404, "model"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"temperature": 9}, 400, "temperature"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     400, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    ({"n": 3}, 400, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"messages": [{"role": "user", "content": "x " * 5000}]}, 400, "messages"),
])
def test_bad_requests_get_openai_errors(served, change, status, param):
    body = {"model": served.server.name, "messages": user("hi"), **change}
    reply = httpx.post(served.base_url + "/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"]


def test_malformed_and_oversized_bodies(served, client):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = served.base_url + "/chat/completions"
    assert httpx.post(url, content=b"{not json", headers=headers).status_code == 400
    assert httpx.post(url, content=b"[1, 2]", headers=headers).status_code == 400
    huge = httpx.post(url, content=b" " * (5 * 2**20), headers=headers, timeout=60)
    assert huge.status_code == 413 and "MiB" in huge.json()["error"]["message"]
    # ... and the server still answers
    assert client.chat.completions.create(model=served.server.name,
                                          messages=user("What is code 3?")).choices


def test_eight_concurrent_clients_are_all_answered_in_batches(served, client, chat_answers):
    before = (served.server.batcher.batches, served.server.batcher.rows)
    answers: dict[int, str] = {}
    together = threading.Barrier(8)

    def ask(i: int) -> None:
        prompt = PROMPTS[i % len(PROMPTS)]
        together.wait(timeout=60)
        reply = client.chat.completions.create(model=served.server.name, messages=user(prompt))
        answers[i] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(answers) == list(range(8))
    assert all(answers[i].startswith(chat_answers["tuned"][PROMPTS[i % 3]][:6]) for i in answers)
    print("batched == alone:", sum(answers[i] == chat_answers["tuned"][PROMPTS[i % 3]]
                                   for i in answers), "of 8")
    batches = served.server.batcher.batches - before[0]
    assert served.server.batcher.rows - before[1] == 8
    assert batches < 8, "concurrent requests should share batches"


def test_a_client_that_hangs_up_does_not_stop_the_server(served, client):
    with httpx.stream("POST", served.base_url + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": served.server.name, "messages": user("Write a poem."),
                            "stream": True, "max_tokens": 500}) as reply:
        for _ in reply.iter_lines():
            break    # hang up after the first event
    assert client.chat.completions.create(model=served.server.name,
                                          messages=user("What is code 3?")).choices


# ---- pieces without a server ---------------------------------------------------------------


@pytest.mark.parametrize("stops, pieces, final", [
    ([], ["  Hel", "lo  ", "world "], "Hello  world"),
    (["STOP"], ["a S", "T", "OP b"], "a"),
    (["STOP"], ["a S", "Tx"], "a STx"),
    (["\n\n"], ["line\n", "\nnext"], "line"),
    (["的"], ["你好", "的世界"], "你好"),
])
def test_answer_text_never_sends_what_a_stop_string_claims(stops, pieces, final):
    answer, sent, raw = AnswerText(stops), [], ""
    for piece in pieces:
        raw += piece
        delta, stopped = answer.update(raw)
        sent.append(delta)
        if stopped:
            break
    sent.append(answer.finish(raw))
    assert "".join(sent) == final


def test_parse_refuses_what_it_cannot_honour():
    ok = parse_chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 5, "stop": "x", "presence_penalty": 0}, 100)
    assert ok.messages[0]["role"] == "system" and ok.messages[1]["content"] == "a\nb"
    assert ok.max_tokens == 5 and ok.stop == ["x"]
    for body in ({"model": "m", "messages": user("a"), "max_tokens": 101},
                 {"model": "m", "messages": user("a"), "top_p": 0},
                 {"model": "m", "messages": user("a"), "presence_penalty": 1},
                 {"model": "m", "messages": user("a"), "tools": [{"type": "function"}]},
                 {"model": "m", "messages": user("a"), "stream": "yes"},
                 {"messages": user("a")}, ["not", "an", "object"]):
        with pytest.raises(ApiError) as err:
            parse_chat_request(body, 100)
        assert err.value.status == 400


def test_api_key_is_required_off_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert api_key_for("127.0.0.1", None) == (None, False)
    key, made = api_key_for("0.0.0.0", None)
    assert made and key.startswith("sk-") and len(key) > 20
    assert api_key_for("0.0.0.0", "my-own-key") == ("my-own-key", False)


def test_cli_serve_prints_the_url_and_answers(tiny_run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "finetune_gui", "serve", str(tiny_run),
                             "--port", str(port), "--api-key", KEY], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving" in line or not line:
                break
        assert f"http://127.0.0.1:{port}/v1" in "".join(lines), "".join(lines)
        for _ in range(100):   # uvicorn binds just after the line is printed
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                                  headers={"Authorization": f"Bearer {KEY}"})
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert reply.status_code == 200
        assert json.loads(reply.text)["data"][0]["id"] == Path(tiny_run).name
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_serve_refuses_a_taken_port(tiny_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "finetune_gui", "serve", str(tiny_run),
                               "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_a_merged_export_is_served_with_the_runs_template(tiny_run, tmp_path, chat_answers):
    from finetune_gui.export import export_merged
    merged = export_merged(tiny_run, tmp_path / "merged").path
    engine, name = load_engine(merged)
    assert name == "merged" and not engine.has_adapter
    background = BackgroundServer(ModelServer(engine, name), "127.0.0.1", free_port()).start()
    try:
        client = openai.OpenAI(base_url=background.base_url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["merged"]
        reply = client.chat.completions.create(model="merged", messages=user("What is code 3?"))
        assert reply.choices[0].message.content == chat_answers["tuned"]["What is code 3?"]
    finally:
        background.stop()
