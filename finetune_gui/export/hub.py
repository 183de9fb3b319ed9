"""Upload an exported folder (merged model, GGUF + Modelfile, or an adapter) to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FinetuneError

TOKEN_ENV = "HF_TOKEN"


def require_token(token: str | None = None) -> str:
    """The Hub token (argument or HF_TOKEN), or a clear error before any work is done."""
    token = (token or os.environ.get(TOKEN_ENV, "")).strip()
    if not token:
        raise FinetuneError(f"no Hugging Face token: set the {TOKEN_ENV} environment variable "
                            "to a token with write access (huggingface.co/settings/tokens)")
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
        raise FinetuneError(f"{path}: nothing to upload (export the model first)")
    missing = [name for name in files or [] if not (path / name).is_file()]
    if missing:
        raise FinetuneError(f"{path}: {', '.join(missing)} not found; nothing uploaded")
    if not repo_id or repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise FinetuneError(f"Hub repository must look like 'user/name', got {repo_id!r}")
    token = require_token(token)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(path), commit_message=commit_message,
                          allow_patterns=list(files) if files else None)
    except OfflineModeIsEnabled:
        raise FinetuneError("cannot push to the Hugging Face Hub: offline mode is on "
                            "(HF_HUB_OFFLINE=1); unset it on a machine with network access") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise FinetuneError(f"the Hub refused the upload to {repo_id} (HTTP {status}): "
                                f"check that {TOKEN_ENV} has write access") from None
        raise FinetuneError(f"cannot push to {repo_id}: {str(exc).splitlines()[0][:200]}") from None
    except (OSError, ConnectionError) as exc:
        raise FinetuneError("cannot reach the Hugging Face Hub (no network?): "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                            ) from None
    except Exception as exc:  # httpx/requests transport errors differ between versions
        name = type(exc).__name__
        if "Connect" in name or "Timeout" in name or "Network" in name or "Transport" in name:
            raise FinetuneError(f"cannot reach the Hugging Face Hub (no network?): {name}") from None
        raise FinetuneError(f"cannot push to {repo_id}: {name}: {str(exc)[:200]}") from None
    return str(url)
