"""``python -m finetune_gui serve``: the OpenAI-compatible API, from the command line."""

from __future__ import annotations

import os
import sys

from .errors import FinetuneError

DEFAULT_PORT = 8000


def cmd_serve(args) -> int:
    from .serving.http import check_port, serve_forever
    from .serving.server import ModelServer, api_key_for, base_url, client_snippet, load_engine
    if not 1 <= args.max_batch <= 64:
        raise FinetuneError("--max-batch must be 1-64")
    key, made_up = api_key_for(args.host, args.api_key or os.environ.get("FINETUNE_GUI_API_KEY"))
    check_port(args.host, args.port)
    print(f"loading {args.path} …", file=sys.stderr, flush=True)
    engine, name = load_engine(args.path)
    server = ModelServer(engine, name, api_key=key, max_batch=args.max_batch)
    url = base_url(args.host, args.port)
    print(f"serving {', '.join(server.model_ids)} at {url} (Ctrl+C stops)", flush=True)
    if made_up:
        print(f"API key (generated, required off loopback): {key}", flush=True)
    print("\n" + client_snippet(url, name, key), flush=True)
    serve_forever(server, args.host, args.port)
    return 0


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible API (/v1/chat/completions) for a "
                                     "tuned run or a merged export")
    p.add_argument("path", help="run folder of a finished run, or a folder from export --merged")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (off loopback an API key is always required)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY); also "
                                     "FINETUNE_GUI_API_KEY; generated when the host is not "
                                     "loopback and none is given")
    p.add_argument("--max-batch", type=int, default=8,
                   help="answer up to this many waiting requests together")
    p.set_defaults(func=cmd_serve)
