"""Upload an exported folder (merged model, GGUF + Modelfile, or an adapter) to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FinetuneError
from ..messages import Message

TOKEN_ENV = "HF_TOKEN"


def require_token(token: str | None = None) -> str:
    """The Hub token (argument or HF_TOKEN), or a clear error before any work is done."""
    token = (token or os.environ.get(TOKEN_ENV, "")).strip()
    if not token:
        raise FinetuneError(Message("hub.no_token", env=TOKEN_ENV))
    return token


def push_to_hub(folder: str | Path, repo_id: str, *, files: list[str] | None = None,
                token: str | None = None, private: bool = True,
                commit_message: str = "Upload from finetune_gui") -> str:
    """Create ``repo_id`` (private by default) and upload ``folder``; returns the repo URL.

    ``files``: upload only these names from ``folder`` (e.g. a GGUF and its Modelfile).

    The token comes from ``token`` or the HF_TOKEN environment variable. Every failure (no
    token, no network, offline mode, refused) ends as one ``FinetuneError`` line.
    """
    path = Path(folder)
    if not path.is_dir() or not any(path.iterdir()):
        raise FinetuneError(Message("hub.nothing", path=path))
    missing = [name for name in files or [] if not (path / name).is_file()]
    if missing:
        raise FinetuneError(Message("hub.missing", path=path, names=", ".join(missing)))
    if not repo_id or repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise FinetuneError(Message("hub.repo", got=repr(repo_id)))
    token = require_token(token)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(path), commit_message=commit_message,
                          allow_patterns=list(files) if files else None)
    except OfflineModeIsEnabled:
        raise FinetuneError(Message("hub.offline")) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise FinetuneError(Message("hub.refused", repo=repo_id, status=status,
                                        env=TOKEN_ENV)) from None
        raise FinetuneError(Message("hub.push_failed", repo=repo_id,
                                    why=str(exc).splitlines()[0][:200])) from None
    except (OSError, ConnectionError) as exc:
        raise FinetuneError(Message("hub.unreachable", why=str(exc).splitlines()[0][:200]
                                    if str(exc) else type(exc).__name__)) from None
    except Exception as exc:  # httpx/requests transport errors differ between versions
        name = type(exc).__name__
        if "Connect" in name or "Timeout" in name or "Network" in name or "Transport" in name:
            raise FinetuneError(Message("hub.unreachable", why=name)) from None
        raise FinetuneError(Message("hub.push_failed", repo=repo_id,
                                    why=f"{name}: {str(exc)[:200]}")) from None
    return str(url)
