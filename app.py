"""Start the fine-tuning wizard: ``python app.py`` opens it in a window of its own (a
native window where pywebview works, else the default browser); on a machine without a
display, or with ``--no-window``, open http://127.0.0.1:7860 yourself.

    python app.py [--host HOST] [--port PORT] [--share] [--auth USER:PASS] [--lang en|zh]
                  [--model NAME_OR_PATH] [--runs-dir DIR] [--no-window]

Closing the native window ends the app; a running training job is saved at a checkpoint
first (the window asks before it closes).

``--share`` makes a public Gradio link, so it always needs a login: without ``--auth`` (or
the FINETUNE_GUI_AUTH variable) a password is generated and printed; the same for a
``--host`` that others on the network can reach. Whenever others can reach the app
(``--share``, ``--auth``, or such a host) it is *shared*: paths stay inside the workspace
and no model runs code. If the link cannot be made (no internet), the app says so and keeps
serving locally.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

AUTH_ENV = "FINETUNE_GUI_AUTH"
SHARE_USER = "finetune"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="LoRA/QLoRA fine-tuning wizard (Gradio).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 = every network interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true",
                   help="also make a public Gradio link (a login is always required)")
    p.add_argument("--auth", action="append",
                   help=f"USER:PASS login; repeat it for more users (or set {AUTH_ENV})")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="interface language")
    p.add_argument("--model", help="base model to start with (default: the embedded "
                                   "smollm2-135m-instruct)")
    p.add_argument("--runs-dir", default="runs", help="where training runs are kept")
    p.add_argument("--no-window", action="store_true",
                   help="only serve: open no window and no browser")
    return p.parse_args(argv)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit(f"--auth / {AUTH_ENV} must look like USER:PASS")
    return user, password


def logins(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every --auth USER:PASS (or the FINETUNE_GUI_AUTH one when none is given)."""
    given = args.auth or [os.environ.get(AUTH_ENV)]
    return [pair for pair in map(parse_auth, given) if pair is not None]


def reachable_by_others(args: argparse.Namespace) -> bool:
    """Anyone but the person at this machine can reach the app: it is shared."""
    return bool(args.share or logins(args) or args.host not in LOOPBACK_HOSTS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    users = logins(args)
    shared = reachable_by_others(args)
    if shared and not users:
        users = [(SHARE_USER, secrets.token_urlsafe(12))]
        why = "--share makes this app public" if args.share else \
            f"--host {args.host} lets others on the network reach this app"
        print(f"* {why}: log in as user '{users[0][0]}' with the generated password: "
              f"{users[0][1]}", flush=True)
    from finetune_gui.ui.login import LoginGuard
    auth = LoginGuard(users) if users else None
    from finetune_gui.ui.app import build_app, launch_kwargs
    from finetune_gui.ui.common import AppOptions
    from finetune_gui.ui.jobs import JobRegistry
    from finetune_gui.ui.window import has_display, open_window
    options = AppOptions(lang=args.lang, shared=shared, model=args.model, host=args.host,
                         runs_dir=args.runs_dir, root=os.getcwd())
    registry = JobRegistry()
    demo = build_app(options, registry)
    # Light events (fields, previews, polls) run side by side so no session waits behind
    # another's; heavy ones (model load, chat, training, export) carry their own limits.
    demo.queue(default_concurrency_limit=8)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                prevent_thread_lock=True, quiet=False, **launch_kwargs(shared))
    if args.share and not demo.share_url:
        print(f"* The public share link could not be made (no internet connection, or the "
              f"Gradio share server is unreachable). The app is still serving locally at "
              f"{demo.local_url} (login required).", flush=True)
    elif args.share:
        print(f"* Public link: {demo.share_url} (anyone with the link and the password can "
              "use this app)", flush=True)
    shown = ""
    if not args.no_window and has_display():
        print("* Opening the app's window…", flush=True)
        shown = open_window(demo.local_url, lang=args.lang, job_running=registry.busy)
    if shown == "window":
        close_app(demo, registry)
        return 0
    if shown == "browser":
        print(f"* Opened {demo.local_url} in your browser. Press Ctrl+C to stop.", flush=True)
    else:
        print(f"* Open {demo.local_url} in a browser. Press Ctrl+C to stop.", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


def close_app(demo, registry) -> None:
    """The window was closed: a running job is saved at a checkpoint, then the server stops."""
    print("* The window was closed: stopping the app.", flush=True)
    state = registry.shutdown()
    if state is not None:
        print(f"* The training job stopped at step {state.step} ({state.status}); resume it "
              f"with: python -m finetune_gui train {state.output_dir}/run.yaml --resume",
              flush=True)
    demo.close()


if __name__ == "__main__":
    sys.exit(main())
