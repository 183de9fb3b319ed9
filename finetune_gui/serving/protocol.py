"""The OpenAI chat-completions wire format: requests checked field by field, answers and
errors in the shapes the official clients parse. No web framework here, only dicts."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from ..chat import MAX_MESSAGE_CHARS

MAX_MESSAGES = 256
MAX_STOPS = 4           # as OpenAI's own limit
MAX_STOP_CHARS = 200
ROLES = {"system", "developer", "user", "assistant"}


class ApiError(Exception):
    """A request the server refuses: the HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = \
            status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind,
                          "param": self.param, "code": self.code}}


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass
class ChatRequest:
    """One checked /v1/chat/completions request."""
    model: str
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise _bad(f"'{name}' must be a number from {low:g} to {high:g}; got {value!r}", name)
    return float(value)


def _content(message: dict, index: int) -> str:
    """A message's text: a string, or a list of text parts (images are refused)."""
    content = message.get("content")
    where = f"messages[{index}].content"
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(f"{where}: only text parts are supported; got {kind!r}", where)
            pieces.append(part["text"])
        text = "\n".join(pieces)
    else:
        raise _bad(f"{where} must be a string or a list of text parts", where)
    if len(text) > MAX_MESSAGE_CHARS:
        raise _bad(f"{where} is {len(text):,} characters; at most {MAX_MESSAGE_CHARS:,}", where)
    return text


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"'messages' has {len(messages)} entries; at most {MAX_MESSAGES}", "messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; "
                       f"got {role!r}", f"messages[{i}].role")
        if message.get("tool_calls"):
            raise _bad("tool calls are not supported", f"messages[{i}].tool_calls")
        checked.append({"role": "system" if role == "developer" else role,
                        "content": _content(message, i)})
    if checked[-1]["role"] != "user" or not checked[-1]["content"].strip():
        raise _bad("the last message must be a non-empty user message", "messages")
    return checked


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS \
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise _bad(f"'stop' must be a string or a list of at most {MAX_STOPS} non-empty "
                   f"strings of at most {MAX_STOP_CHARS} characters", "stop")
    return stops


def parse_chat_request(body, max_tokens_limit: int) -> ChatRequest:
    """Check every field we use; refuse, with the field named, what we cannot honour."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must name a model (see GET /v1/models)", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    n = body.get("n", 1)
    if n != 1:
        raise _bad("only n=1 is supported", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise _bad(f"'{name}' is not supported (the run's repetition penalty applies)", name)
    for name in ("tools", "functions", "logprobs", "response_format"):
        if body.get(name) not in (None, False, [], {"type": "text"}):
            raise _bad(f"'{name}' is not supported by this server", name)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= max_tokens_limit):
        raise _bad(f"'max_tokens' must be a whole number from 1 to {max_tokens_limit}; "
                   f"got {limit!r}", "max_tokens")
    return ChatRequest(model=model, messages=_messages(body), stream=stream,
                       include_usage=bool(options.get("include_usage")), max_tokens=limit,
                       temperature=_number(body, "temperature", 0, 2),
                       top_p=_top_p(body), stop=_stops(body))


def _top_p(body: dict) -> float | None:
    value = _number(body, "top_p", 0, 1)
    if value == 0:
        raise _bad("'top_p' must be above 0 (1 keeps every token)", "top_p")
    return value


class AnswerText:
    """The answer as the client sees it, fed the decoded text as it grows.

    Stripped as ``chat`` strips it, cut before the first stop string, and never sends text
    that a stop string still arriving could claim (nor trailing spaces, nor half a
    character), so the streamed pieces add up to exactly the final answer."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.sent = ""

    def _cut(self, raw: str) -> tuple[str, bool]:
        text = raw.lstrip()
        hits = [text.find(s) for s in self.stops if s in text]
        return (text[:min(hits)], True) if hits else (text, False)

    def update(self, raw: str) -> tuple[str, bool]:
        """The new piece to send, and whether a stop string ended the answer."""
        text, stopped = self._cut(raw)
        if stopped:
            return self._advance(text.rstrip()), True
        safe = len(text.rstrip())
        if text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        return self._advance(text[:safe].rstrip()), False

    def finish(self, raw: str) -> str:
        """The last piece, once generation has ended."""
        text, _ = self._cut(raw)
        return self._advance(text.rstrip())

    def _advance(self, visible: str) -> str:
        if len(visible) <= len(self.sent) or not visible.startswith(self.sent):
            return ""
        piece, self.sent = visible[len(self.sent):], visible
        return piece


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(cid: str, model: str, text: str, finish: str, use: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": use}


def chunk_body(cid: str, model: str, created: int, delta: dict, finish: str | None = None,
               use: dict | None = None) -> dict:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if use is not None:   # the usage chunk (stream_options.include_usage) has no choices
        body["choices"], body["usage"] = [], use
    return body


def models_body(model_ids: list[str], created: int) -> dict:
    return {"object": "list", "data": [model_body(m, created) for m in model_ids]}


def model_body(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "finetune_gui"}
