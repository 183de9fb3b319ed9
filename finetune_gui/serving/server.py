"""What is served: a tuned run (or a merged export) behind the batcher, its model ids, and
the checks that turn a parsed request into a generation job."""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
import time
from pathlib import Path

from .. import runs
from ..chat import ChatEngine, context_length
from ..config import RunConfig
from ..errors import FinetuneError
from .batcher import Batcher, Job
from .protocol import ApiError, ChatRequest

MERGED_RUN_COPY = "finetune_gui_run.yaml"   # written beside a merged export (export.merged)
MAX_TOKENS_LIMIT = 4096
REQUEST_SECONDS = 600       # a request's generation ends (finish "length") after this long
BASE_SUFFIX = ":base"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(host: str, port: int) -> str:
    """The URL clients use: a wildcard host is reached on loopback, IPv6 in brackets."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/v1"


def api_key_for(host: str, key: str | None) -> tuple[str | None, bool]:
    """The key to require, and whether it was made up here: always one off loopback."""
    if key:
        if len(key) < 8:
            raise FinetuneError("--api-key must be at least 8 characters")
        return key, False
    if is_loopback(host):
        return None, False
    return "sk-" + secrets.token_urlsafe(24), True


def load_engine(path: str | Path) -> tuple[ChatEngine, str]:
    """A run folder (its adapter on its base, merged for speed) or a merged export folder,
    and the model id it is served under (the folder's name)."""
    folder = Path(path).expanduser()
    if (folder / MERGED_RUN_COPY).is_file():
        config = RunConfig.load(folder / MERGED_RUN_COPY)
        config.model = dataclasses.replace(config.model, name_or_path=str(folder.resolve()),
                                           quantization="none")
        return ChatEngine.from_config(config), folder.resolve().name
    paths, _ = runs.find_run(folder)
    engine = ChatEngine.from_run(paths.root)
    engine.merge()
    return engine, paths.root.resolve().name


class ModelServer:
    """A loaded model answering chat completions; ``name`` is its model id and, for a run,
    ``name:base`` answers with the adapter switched off (the base, for comparison)."""

    def __init__(self, engine: ChatEngine, name: str, *, api_key: str | None = None,
                 max_batch: int = 8, max_waiting: int = 64,
                 request_seconds: float = REQUEST_SECONDS):
        self.engine, self.name, self.api_key = engine, name, api_key
        self.created = int(time.time())
        self.request_seconds = request_seconds
        self.max_tokens_limit = max(1, min(MAX_TOKENS_LIMIT, context_length(engine.model) - 16))
        self.batcher = Batcher(engine, max_batch=max_batch, max_waiting=max_waiting)

    @property
    def model_ids(self) -> list[str]:
        return [self.name] + ([self.name + BASE_SUFFIX] if self.engine.has_adapter else [])

    def check_key(self, given: str | None) -> bool:
        if self.api_key is None:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.api_key.encode())

    def job(self, request: ChatRequest, emit) -> Job:
        """The generation for a checked request (refused, with the reason, if it cannot fit)."""
        if request.model not in self.model_ids:
            raise ApiError(404, f"model {request.model!r} is not served here; "
                           f"this server has {', '.join(self.model_ids)}",
                           param="model", code="model_not_found")
        gen = self.engine.config.generation
        params = dataclasses.replace(
            gen, max_new_tokens=min(request.max_tokens or gen.max_new_tokens,
                                    self.max_tokens_limit),
            temperature=gen.temperature if request.temperature is None else request.temperature,
            top_p=gen.top_p if request.top_p is None else request.top_p)
        try:
            prompt = self.engine.fit_prompt(request.messages, params.max_new_tokens)
        except FinetuneError as exc:
            raise ApiError(400, str(exc), param="messages",
                           code="context_length_exceeded") from None
        return Job(prompt.ids, params, request.stop, request.model == self.name, emit,
                   deadline=time.monotonic() + self.request_seconds)

    def close(self) -> None:
        self.batcher.close()


def client_snippet(base_url: str, model: str, api_key: str | None) -> str:
    """Python that asks this server with the official ``openai`` client."""
    return (f'from openai import OpenAI\n\n'
            f'client = OpenAI(base_url="{base_url}", api_key="{api_key or "unused"}")\n'
            f'stream = client.chat.completions.create(\n'
            f'    model="{model}", stream=True,\n'
            f'    messages=[{{"role": "user", "content": "Hello!"}}])\n'
            f'for chunk in stream:\n'
            f'    print(chunk.choices[0].delta.content or "", end="", flush=True)\n')
