"""A shared link is a door to this machine: nobody gets in without the password, and those who
do stay inside the workspace, run no code from model files, and upload only so much.

Over HTTP against the real launcher (``--share`` without internet, as in
``test_ui_launcher.py``, which covers the login itself), and through the UI handlers.
"""

from __future__ import annotations

import dataclasses
import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gradio as gr
import pytest

from conftest import write_jsonl, ui_handler
from finetune_gui.config import RunConfig
from finetune_gui.training import TrainingJob
from finetune_gui.ui.app import build_app, launch_kwargs
from finetune_gui.ui.common import AppOptions
from finetune_gui.ui.jobs import JobRegistry
from finetune_gui.ui.login import LoginGuard
from finetune_gui.ui.state import UserState
from finetune_gui.ui.workspace import PathNotAllowed, Workspace
from tests.browser.conftest import free_port, start_app, stop_app, wait_for_line

PASSWORD = "S3cret-Sentinel-pw"
EVE_PASSWORD = "Eve-only-for-the-throttle-test"
TOKEN = "hf_TokenSentinel1234567890"
OUTSIDE = "outside the shared workspace"


# ---- over HTTP: the real app, shared, with a password ------------------------------------------

@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """The app shared from its own workspace folder, whose presets/user/ holds presets
    saved earlier by a local launch with paths outside the workspace (finding 1)."""
    work = tmp_path_factory.mktemp("shared-app")
    outside = tmp_path_factory.mktemp("outside")
    write_jsonl(outside / "secret.jsonl", [{"instruction": "pin", "output": "1234"}])
    user_presets = work / "presets" / "user"
    user_presets.mkdir(parents=True)
    (user_presets / "outside-data.yaml").write_text(f"data:\n  path: {outside}/secret.jsonl\n")
    (user_presets / "outside-model.yaml").write_text(f"model:\n  name_or_path: {outside}\n")
    port = free_port()
    log = work / "app.log"
    proc = start_app(["--share", "--port", str(port), "--runs-dir", str(work / "runs"),
                      "--auth", f"ann:{PASSWORD}", "--auth", f"eve:{EVE_PASSWORD}"], log,
                     {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                      "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                      "FINETUNE_GUI_AUTH": f"ann:{PASSWORD}", "HF_TOKEN": TOKEN,
                      "FINETUNE_GUI_MAX_UPLOAD": "1mb"}, cwd=work)
    try:
        wait_for_line(log, "Press Ctrl+C to stop", proc, timeout=180)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_app(proc)


def fetch(url: str, data: bytes | None = None, headers: dict | None = None, opener=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def logged_in(base: str):
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    status, _ = fetch(base + "/login", urllib.parse.urlencode(
        {"username": "ann", "password": PASSWORD}).encode(), opener=opener)
    assert status == 200
    return opener


def multipart(size: int, name: str = "d.jsonl") -> tuple[bytes, dict]:
    boundary = "finetuneBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


API_GETS = ["/config", "/gradio_api/info", "/gradio_api/queue/status", "/monitoring",
            "/gradio_api/file=/etc/passwd", "/gradio_api/file=app.py",
            "/gradio_api/file=presets/quickstart.yaml", "/gradio_api/upload_progress?upload_id=x"]
API_POSTS = ["/gradio_api/queue/join", "/gradio_api/run/predict", "/gradio_api/call/on_load",
             "/gradio_api/api/predict"]


def test_visitors_without_the_password_get_only_the_login_page(shared_app):
    base, _ = shared_app
    for url in ("/", "/?all_endpoints=true", "/?all_endpoints=1&page="):
        status, page = fetch(base + url)
        assert status == 200 and '"auth_required":true' in page
        assert '"components":[],"dependencies":[]' in page
        assert '"named_endpoints":{},"unnamed_endpoints":{}' in page, f"API description: {url}"
        for private in ("train-start", "learning_rate", "quickstart", "LoRA", "output_dir",
                        "on_preset_load"):
            assert private not in page, f"the login page {url} gives away {private!r}"
    for path in API_GETS:
        assert fetch(base + path)[0] == 401, path
    body = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"}).encode()
    for path in API_POSTS:
        assert fetch(base + path, body, {"Content-Type": "application/json"})[0] == 401, path
    assert fetch(base + "/gradio_api/upload", *multipart(10))[0] == 401
    assert fetch(base + "/login", urllib.parse.urlencode(
        {"username": "ann", "password": "guess"}).encode())[0] == 400


def call_api(base: str, opener, name: str, data: list) -> tuple[str, str]:
    """One event through Gradio's HTTP API (what any script can send): (event, data)."""
    status, text = fetch(f"{base}/gradio_api/call/{name}", json.dumps({"data": data}).encode(),
                         {"Content-Type": "application/json"}, opener=opener)
    assert status == 200, text
    event_id = json.loads(text)["event_id"]
    status, stream = fetch(f"{base}/gradio_api/call/{name}/{event_id}", opener=opener)
    events = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
    payload = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], payload[-1] if payload else ""


def test_a_preset_cannot_smuggle_outside_paths_into_a_shared_app(shared_app):
    """Finding 1: presets saved by a local launch with outside paths, loaded after --share,
    through Gradio's HTTP API."""
    base, _ = shared_app
    opener = logged_in(base)
    for name, field in (("outside-data.yaml", "data.path"),
                        ("outside-model.yaml", "model.name_or_path")):
        event, data = call_api(base, opener, "on_preset_load", [f"presets/user/{name}"])
        assert event == "error", (name, data)
        message = json.loads(data)["error"]
        assert message.startswith(f"{field} '") and OUTSIDE in message, message


def test_a_10_mb_system_prompt_is_refused_at_once_over_http(shared_app):
    """Finding 2: it used to run for over 20 minutes and hold gigabytes."""
    import time
    base, _ = shared_app
    opener = logged_in(base)
    started = time.time()
    event, data = call_api(base, opener, "set_data_system_prompt", ["x" * 10_000_000])
    assert time.time() - started < 60
    assert event == "complete", data
    _, status = json.loads(data)
    assert status == ("⚠️ UI: data.system_prompt is 10,000,000 characters long; at most "
                      "20,000 are allowed")


def test_wrong_passwords_lock_the_user_name_for_a_while(shared_app):
    """Finding 5: 50 wrong tries went through in 1.1 s."""
    base, _ = shared_app
    login = base + "/login"
    for _ in range(LoginGuard.FREE_TRIES):
        assert fetch(login, urllib.parse.urlencode(
            {"username": "eve", "password": "guess"}).encode())[0] == 400
    assert fetch(login, urllib.parse.urlencode(
        {"username": "eve", "password": EVE_PASSWORD}).encode())[0] == 400, "locked"
    logged_in(base)                                   # another user is not affected


def test_login_guard_backs_off_and_forgets_after_a_success():
    now = [0.0]
    guard = LoginGuard([("ann", "pw")], clock=lambda: now[0])
    assert guard("ann", "pw") and not guard("ann", "PW") and not guard("nobody", "pw")
    for _ in range(LoginGuard.FREE_TRIES - 1):
        assert not guard("ann", "wrong")
    assert guard.locked_for("ann") == LoginGuard.FIRST_LOCK_S
    assert not guard("ann", "pw"), "locked: even the right password waits"
    now[0] += LoginGuard.FIRST_LOCK_S + 1
    assert not guard("ann", "wrong")
    assert guard.locked_for("ann") == 2 * LoginGuard.FIRST_LOCK_S, "the lock doubles"
    now[0] += 1000
    assert guard("ann", "pw") and guard.locked_for("ann") == 0


def test_logged_in_users_read_no_files_through_gradio(shared_app):
    base, _ = shared_app
    opener = logged_in(base)
    assert fetch(base + "/config", opener=opener)[0] == 200
    for path in ("/etc/passwd", "app.py", "presets/quickstart.yaml", "../../etc/passwd"):
        status, _ = fetch(base + "/gradio_api/file=" + path, opener=opener)
        assert status in (403, 404), path


def test_every_way_a_config_is_used_checks_it_again(shared_ui, tiny_model_dir):
    """A session config holding outside paths however they got there (an old session, a
    raw API call): Start, Resume, Model load, and a run whose model lies outside."""
    import shutil

    from finetune_gui.runs import ADAPTER, RUN_CONFIG
    demo, root, secret = shared_ui
    registry = demo.registry
    st = UserState(config=RunConfig())
    st.config.data.path = str(secret / "private.jsonl")
    st.config.train.output_dir = "runs/x"
    values = [None] * len(demo.ui.fields)
    for handler in ("on_start", "on_resume"):
        message = refused(lambda: ui_handler(demo, "train_tab", handler)(st, *values))
        assert message.startswith("data.path '") and OUTSIDE in message, message
    assert registry.current is None, "nothing started"
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(secret)
    assert OUTSIDE in refused(lambda: ui_handler(demo, "model_tab", "on_load")(st))
    # a run trained locally on a model folder outside the workspace
    run = root / "runs" / "local-run"
    (run / ADAPTER).mkdir(parents=True)
    config = RunConfig()
    config.model.name_or_path = str(secret)
    config.save(run / RUN_CONFIG)
    st = UserState(config=RunConfig())
    assert OUTSIDE in refused(lambda: ui_handler(demo, "export_tab", "on_run")(st, "runs/local-run"))
    assert OUTSIDE in refused(lambda: ui_handler(demo, "chat_tab", "on_load")(st, "runs/local-run"))
    shutil.rmtree(run)


def test_auth_alone_gets_the_same_protection_as_share(tmp_path_factory):
    """Finding 3: `--auth` without `--share` showed the API to anyone and had no jail."""
    work = tmp_path_factory.mktemp("auth-only")
    (work / "presets" / "user").mkdir(parents=True)
    (work / "presets" / "user" / "outside.yaml").write_text(f"data:\n  path: {work.parent}/x.jsonl\n")
    port = free_port()
    log = work / "app.log"
    proc = start_app(["--port", str(port), "--auth", f"ann:{PASSWORD}"], log,
                     {"FINETUNE_GUI_AUTH": ""}, cwd=work)
    try:
        wait_for_line(log, "Press Ctrl+C to stop", proc, timeout=180)
        base = f"http://127.0.0.1:{port}"
        status, page = fetch(base + "/?all_endpoints=true")
        assert status == 200 and '"named_endpoints":{},"unnamed_endpoints":{}' in page
        assert "on_preset_load" not in page and "quickstart" not in page
        event, data = call_api(base, logged_in(base), "on_preset_load",
                               ["presets/user/outside.yaml"])
        assert event == "error" and OUTSIDE in json.loads(data)["error"]
    finally:
        stop_app(proc)


@pytest.mark.parametrize("argv, shared", [
    ([], False), (["--host", "localhost"], False), (["--share"], True),
    (["--auth", "ann:pw"], True), (["--host", "0.0.0.0"], True), (["--host", "192.168.1.5"], True),
])
def test_reachable_by_others_means_shared(argv, shared, monkeypatch):
    """Finding 3: --auth alone, or a LAN host, gets the same jail as --share."""
    import app
    monkeypatch.delenv("FINETUNE_GUI_AUTH", raising=False)
    assert app.reachable_by_others(app.parse_args(argv)) is shared


def test_uploads_are_capped(shared_app):
    base, _ = shared_app
    opener = logged_in(base)
    status, text = fetch(base + "/gradio_api/upload", *multipart(1000), opener=opener)
    assert status == 200 and text.endswith('d.jsonl"]')
    status, text = fetch(base + "/gradio_api/upload", *multipart(2_000_000), opener=opener)
    assert status == 413 and "maximum allowed size of 1048576 bytes" in text


def test_no_password_or_token_in_the_server_log(shared_app):
    _, log = shared_app
    text = log.read_text(encoding="utf-8")
    assert "Press Ctrl+C to stop" in text
    assert PASSWORD not in text and TOKEN not in text


def test_launch_settings_serve_no_extra_folders_and_cap_uploads_when_shared(monkeypatch):
    monkeypatch.delenv("FINETUNE_GUI_MAX_UPLOAD", raising=False)
    local, shared = launch_kwargs(), launch_kwargs(shared=True)
    assert local["allowed_paths"] == [] == shared["allowed_paths"]
    assert "max_file_size" not in local and shared["max_file_size"] == "5gb"
    monkeypatch.setenv("FINETUNE_GUI_MAX_UPLOAD", "20mb")
    assert launch_kwargs()["max_file_size"] == "20mb"


# ---- paths typed into a shared app stay inside the workspace -----------------------------------

@pytest.fixture
def shared_ui(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "data" / "uploads").mkdir(parents=True)
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.mkdir()
    write_jsonl(secret / "private.jsonl", [{"instruction": "pin", "output": "1234"}])
    (secret / "private.yaml").write_text("lora:\n  r: 4\n")
    demo = build_app(AppOptions(root=str(tmp_path), shared=True,
                                runs_dir=str(tmp_path / "runs")), JobRegistry())
    return demo, tmp_path, secret



def refused(call) -> str:
    with pytest.raises(gr.Error) as info:
        call()
    return info.value.message


def test_symlinks_are_resolved_before_the_check(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jsonl").write_text("{}\n")
    ws = Workspace.create(tmp_path / "root", "runs", shared=True)
    ws.uploads.mkdir(parents=True)
    (ws.uploads / "link").symlink_to(outside, target_is_directory=True)
    (ws.uploads / "file.jsonl").symlink_to(outside / "x.jsonl")
    for path in ("data/uploads/link/x.jsonl", "data/uploads/file.jsonl", "data/uploads/link"):
        with pytest.raises(PathNotAllowed, match=OUTSIDE):
            ws.check(path, "data.path")
    (ws.uploads / "inside.jsonl").write_text("{}\n")
    (ws.uploads / "alias.jsonl").symlink_to(ws.uploads / "inside.jsonl")
    assert ws.check("data/uploads/alias.jsonl") == ws.uploads / "inside.jsonl"


def test_the_lora_estimate_reads_no_data_outside(shared_ui, tiny_model_dir):
    """The estimate measures the data's rows: never those of a file outside the workspace."""
    demo, root, secret = shared_ui
    on_targets = ui_handler(demo, "lora_tab", "on_targets")
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    st.config.data.path = str(secret / "private.jsonl")
    _, count = on_targets(st, ["q_proj", "v_proj"])
    assert "Trainable parameters" in count
    assert "longest rows" not in count and "max_seq_len" in count, count
    write_jsonl(root / "data" / "uploads" / "mine.jsonl",
                [{"instruction": "pin", "output": "1234"}])
    st.config.data.path = "data/uploads/mine.jsonl"
    _, count = on_targets(st, ["q_proj", "v_proj"])
    assert "longest rows" in count, count


def test_data_tab_reads_and_writes_only_inside(shared_ui):
    demo, root, secret = shared_ui
    on_load = ui_handler(demo, "data_tab", "on_load")
    for path in (str(secret / "private.jsonl"), f"../{secret.name}/private.jsonl",
                 "data/uploads/../../../" + secret.name + "/private.jsonl"):
        st = UserState(config=RunConfig())
        message = refused(lambda: on_load(st, path))
        assert message == (f"data.path '{path}' is outside the shared workspace; use a path "
                           "under presets, runs, data/uploads")
        assert st.rows == []
    st = UserState(config=RunConfig(), rows=[{"instruction": "a", "output": "b"}])
    st.config.data.path = str(secret / "private.jsonl")        # e.g. from an old session
    assert OUTSIDE in refused(lambda: ui_handler(demo, "data_tab", "on_save")(st))
    assert "1234" in (secret / "private.jsonl").read_text(), "never overwritten"


def test_presets_and_run_folders_only_inside(shared_ui):
    demo, root, secret = shared_ui
    st = UserState(config=RunConfig())
    assert OUTSIDE in refused(lambda: ui_handler(demo, "app", "on_preset_load")(
        st, str(secret / "private.yaml")))
    update, status = ui_handler(demo, "fields", "set_train_output_dir")(st, str(secret / "run"))
    assert status.startswith("⚠️ train.output_dir") and OUTSIDE in status
    update, status = ui_handler(demo, "fields", "set_model_name_or_path")(st, str(secret))
    assert OUTSIDE in status and st.config.model.name_or_path != str(secret)


def test_uploads_land_in_data_uploads_whatever_their_name(shared_ui, tmp_path_factory):
    demo, root, _ = shared_ui
    temp = tmp_path_factory.mktemp("gradio-tmp")
    evil = temp / "..%2F..%2Fetc%2Fpasswd .jsonl"
    write_jsonl(evil, [{"instruction": "a", "output": "b"}])
    st = UserState(config=RunConfig())
    path_update, *_ = ui_handler(demo, "data_tab", "on_upload")(st, str(evil))
    stored = root / path_update["value"]
    assert stored.resolve().parent == root / "data" / "uploads" and stored.exists()
    assert stored.name == "_2F.._2Fetc_2Fpasswd_.jsonl", "a plain name, no folder in it"


# ---- no code from model files while shared ------------------------------------------------------

def test_shared_app_refuses_remote_code_and_pickle(shared_ui):
    demo, root, _ = shared_ui
    st = UserState(config=RunConfig())
    for key, text in (("trust_remote_code", "model.trust_remote_code is off while the app is "
                                            "shared: run it locally (without --share/--auth) "
                                            "to use such models"),
                      ("allow_pickle", "model.allow_pickle is off while the app is shared: "
                                       "pickle weights can run code on this machine; run it "
                                       "locally (without --share/--auth) to use them")):
        update, status = ui_handler(demo, "fields", f"set_model_{key}")(st, True)
        assert status == f"⚠️ {text}" and update["value"] is False
        assert getattr(st.config.model, key) is False


def test_a_preset_cannot_switch_them_on_while_shared(shared_ui):
    demo, root, _ = shared_ui
    (root / "presets" / "unsafe.yaml").write_text(
        "model:\n  trust_remote_code: true\n  allow_pickle: true\n")
    st = UserState(config=RunConfig())
    *_, message = ui_handler(demo, "app", "on_preset_load")(st, "presets/unsafe.yaml")
    assert "model.trust_remote_code was switched off (the app is shared)" in message
    assert "model.allow_pickle was switched off (the app is shared)" in message
    assert not st.config.model.trust_remote_code and not st.config.model.allow_pickle


def test_load_and_train_force_them_off_while_shared(shared_ui, tiny_model_dir, tmp_path):
    """Even a session whose config holds them (set before sharing) loads safetensors only."""
    import shutil

    import torch
    from safetensors.torch import load_file
    demo, root, _ = shared_ui
    folder = root / "runs" / "pickled-model"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(folder)
    st.config.model.allow_pickle = st.config.model.trust_remote_code = True
    message = refused(lambda: ui_handler(demo, "model_tab", "on_load")(st))
    assert "only pickle weights (pytorch_model.bin), which can run code" in message
    assert not st.config.model.allow_pickle and not st.config.model.trust_remote_code


def test_locally_pickle_needs_the_users_own_switch(tmp_path, tiny_model_dir):
    demo = build_app(AppOptions(root=str(tmp_path)), JobRegistry())
    st = UserState(config=RunConfig())
    update, status = ui_handler(demo, "fields", "set_model_allow_pickle")(st, True)
    assert status == "" and st.config.model.allow_pickle is True
    assert RunConfig().model.allow_pickle is False and RunConfig().model.trust_remote_code is False


# ---- no secrets in what a run writes ---------------------------------------------------------

def test_no_token_or_password_in_a_runs_files(tiny_config, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN)
    monkeypatch.setenv("FINETUNE_GUI_AUTH", f"ann:{PASSWORD}")
    tiny_config.train.max_steps = 4
    state = TrainingJob(tiny_config).run()
    assert state.status == "finished", state.message
    assert not any(TOKEN in line or PASSWORD in line for line in state.log)
    files = [p for p in Path(tiny_config.train.output_dir).rglob("*") if p.is_file()]
    assert any(p.name == "run.yaml" for p in files)
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data and PASSWORD.encode() not in data, path
    names = [f"{s}.{f.name}" for s in ("model", "data", "lora", "train", "generation")
             for f in dataclasses.fields(getattr(RunConfig(), s))]
    assert not [n for n in names if any(w in n for w in ("password", "secret", "hf_token",
                                                         "api_key", "auth"))]


# ---- messages: no server layout, no 'unexpected problem' for odd paths ------------------------

def test_messages_show_paths_relative_to_the_app_folder():
    import os

    from finetune_gui.errors import FinetuneError
    from finetune_gui.ui.common import friendly
    home = os.path.expanduser("~")
    assert friendly(FinetuneError(f"{os.getcwd()}/runs/x: run folder not found")) == \
        "runs/x: run folder not found"
    message = friendly(OSError(f"[Errno 2] No such file: '{home}/secret/data.jsonl'"))
    assert home + "/" not in message and "~/secret/data.jsonl" in message


@pytest.mark.parametrize("key", ["data.path", "train.output_dir", "model.name_or_path"])
def test_a_path_too_long_for_the_file_system_gets_a_clear_message(shared_ui, key):
    demo, _, _ = shared_ui
    st = UserState(config=RunConfig())
    before = st.config.flat()[key]
    update, status = ui_handler(demo, "fields", f"set_{key.replace('.', '_')}")(
        st, "data/uploads/" + "a" * 300 + ".jsonl")
    assert status.startswith(f"⚠️ {key} 'data/uploads/aaaa") and "File name too long" in status
    assert "Unexpected" not in status and st.config.flat()[key] == before
