"""Huge requests against the real shared app end at once and leave memory where it was.

    python bench/bounds.py [--upload-mb 100]

Starts ``app.py --auth`` (shared) in a scratch workspace, logs in over HTTP, and sends what
an outsider could: a 10 MB system prompt, a 240 KB chat message (max_new_tokens=4), a
100 MB upload loaded on the Data tab, and a 1-million-row JSONL loaded there. For each, prints the seconds until the answer, its
message, and the app's resident memory before, right after and 5 s after.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", "bench-password-123"


def wait_ready(log: Path, proc: subprocess.Popen, timeout: float = 240) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Press Ctrl+C to stop" in text:
            return text
        if proc.poll() is not None:
            raise SystemExit(f"app exited:\n{text[-2000:]}")
        time.sleep(0.5)
    raise SystemExit("app did not start")


class Client:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.post("/login", urllib.parse.urlencode({"username": USER,
                                                    "password": PASSWORD}).encode(), {})

    def post(self, path: str, body: bytes, headers: dict) -> str:
        request = urllib.request.Request(self.base + path, data=body, headers=headers)
        with self.opener.open(request, timeout=600) as response:
            return response.read().decode("utf-8", "replace")

    def call(self, name: str, data: list) -> tuple[str, str]:
        text = self.post(f"/gradio_api/call/{name}", json.dumps({"data": data}).encode(),
                         {"Content-Type": "application/json"})
        event_id = json.loads(text)["event_id"]
        with self.opener.open(f"{self.base}/gradio_api/call/{name}/{event_id}",
                              timeout=600) as response:
            stream = response.read().decode("utf-8", "replace")
        events = [ln[7:] for ln in stream.splitlines() if ln.startswith("event: ")]
        payload = [ln[6:] for ln in stream.splitlines() if ln.startswith("data: ")]
        return events[-1], payload[-1] if payload else ""

    def upload(self, path: Path) -> str:
        boundary = "benchBoundary7f3a"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return json.loads(self.post("/gradio_api/upload", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"}))[0]


def rss_mb(proc: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def measure(name: str, proc: psutil.Process, action) -> None:
    before = rss_mb(proc)
    started = time.time()
    event, message = action()
    seconds = time.time() - started
    right_after = rss_mb(proc)
    time.sleep(5)
    after = rss_mb(proc)
    print(f"{name:<28} {seconds:6.1f} s  memory {before:,.0f} → {right_after:,.0f} → "
          f"{after:,.0f} MB (+{after - before:,.0f})  [{event}] {message[:150]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = 7900 + os.getpid() % 90
        log = work / "app.log"
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
                   PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port),
                                "--auth", f"{USER}:{PASSWORD}"], cwd=work, env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_ready(log, app)
            proc = psutil.Process(app.pid)
            client = Client(f"http://127.0.0.1:{port}")
            print(f"app started, {rss_mb(proc):,.0f} MB resident", flush=True)
            # the chat model loaded once first, so its memory is not counted as the request's
            client.call("on_send", ["__base__", "Hi", [], [], "", False, 4, 0.0, 0.9, 50, 1.0])
            measure("10 MB system prompt", proc, lambda: client.call(
                "set_data_system_prompt", ["x" * 10_000_000]))
            measure("240 KB chat message", proc, lambda: client.call(
                "on_send", ["__base__", "tell me " * 30_000, [], [], "", False,
                            4, 0.0, 0.9, 50, 1.0]))
            big = work / "big.jsonl"
            row = json.dumps({"instruction": "What is the code?", "input": "",
                              "output": "The code is blue square number seven."}) + "\n"
            with big.open("w") as fh:
                fh.write(row * (args.upload_mb * 2**20 // len(row)))

            def upload_and_load():
                stored = client.upload(big)
                # on_upload_1: the Data tab's (the Model tab's .gguf upload is on_upload)
                return client.call("on_upload_1", [{"path": stored,
                                                    "meta": {"_type": "gradio.FileData"}}])
            measure(f"{args.upload_mb} MB upload, Data tab", proc, upload_and_load)
            uploads = work / "data" / "uploads"
            uploads.mkdir(parents=True, exist_ok=True)
            (uploads / "million.jsonl").write_text(row * 1_000_000)
            measure("1M-row JSONL, Data tab Load", proc, lambda: client.call(
                "on_load_1", ["data/uploads/million.jsonl"]))   # the Data tab's Load
        finally:
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
