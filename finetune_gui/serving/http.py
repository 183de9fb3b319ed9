"""The HTTP face of a ``ModelServer``: OpenAI's /v1/models and /v1/chat/completions on
FastAPI (which Gradio already brings), run by uvicorn in the foreground (``serve``) or in a
thread the app can stop (the Export tab)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import FinetuneError
from .protocol import (ApiError, chunk_body, completion_body, completion_id, model_body,
                       models_body, parse_chat_request, usage)
from .server import ModelServer, base_url

MAX_BODY_BYTES = 4 * 1024 * 1024


def _error(exc: ApiError):
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _read_json(request) -> object:
    """The request body as JSON, refusing more than MAX_BODY_BYTES before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ApiError(413, f"the request body is over {MAX_BODY_BYTES // 2**20} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES // 2**20} MiB")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


def create_app(server: ModelServer) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(ApiError(exc.status_code, str(exc.detail), kind=kind))

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        return _error(ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error"))

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else None
        if not server.check_key(given):
            return _error(ApiError(401, "a valid API key is required (Authorization: Bearer "
                                   "KEY)", kind="authentication_error", code="invalid_api_key"))
        return await call_next(request)

    @app.get("/v1/models")
    async def list_models():
        return models_body(server.model_ids, server.created)

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id not in server.model_ids:
            raise ApiError(404, f"model {model_id!r} is not served here", param="model",
                           code="model_not_found")
        return model_body(model_id, server.created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        parsed = parse_chat_request(await _read_json(request), server.max_tokens_limit)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = server.job(parsed, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        server.batcher.submit(job)
        cid, created = completion_id(), int(time.time())
        if parsed.stream:
            return StreamingResponse(_sse(server, parsed, job, events, cid, created),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        pieces = []
        try:
            while True:
                event = await events.get()
                if "piece" in event:
                    pieces.append(event["piece"])
                elif "error" in event:
                    raise ApiError(500, event["error"], kind="server_error")
                else:
                    use = usage(len(job.prompt_ids), event["completion_tokens"])
                    return JSONResponse(completion_body(cid, parsed.model, "".join(pieces),
                                                        event["finish"], use))
        finally:
            job.abandoned.set()   # a client that hung up frees its row at the next token

    return app


async def _sse(server, parsed, job, events, cid, created):
    """Server-sent events as OpenAI streams them, ending with ``data: [DONE]``."""
    def line(body: dict) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
    try:
        yield line(chunk_body(cid, parsed.model, created, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if "piece" in event:
                yield line(chunk_body(cid, parsed.model, created, {"content": event["piece"]}))
            elif "error" in event:
                yield line(ApiError(500, event["error"], kind="server_error").body())
                break
            else:
                yield line(chunk_body(cid, parsed.model, created, {}, event["finish"]))
                if parsed.include_usage:
                    yield line(chunk_body(cid, parsed.model, created, {}, use=usage(
                        len(job.prompt_ids), event["completion_tokens"])))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.abandoned.set()


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken, with a message, before loading anything."""
    if not 0 < port < 65536:
        raise FinetuneError(f"--port must be 1-65535; got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise FinetuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class BackgroundServer:
    """uvicorn in a thread: started and stopped by the app, one port, one model."""

    def __init__(self, server: ModelServer, host: str, port: int):
        import uvicorn
        self.server, self.host, self.port = server, host, port
        config = uvicorn.Config(create_app(server), host=host, port=port, log_level="warning",
                                timeout_graceful_shutdown=5)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="serve-http", daemon=True)

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    def start(self, wait_s: float = 20) -> "BackgroundServer":
        check_port(self.host, self.port)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.server.close()
                raise FinetuneError(f"the API server did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=15)
        self.server.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def serve_forever(server: ModelServer, host: str, port: int) -> None:
    """Serve until Ctrl+C (the CLI's ``serve``)."""
    import uvicorn
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        server.close()
