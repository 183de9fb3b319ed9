"""Training data from the Hugging Face Hub: ``data.path`` as ``org/name`` or
``org/name:split``, read through ``datasets.load_dataset`` (Arrow, memory-mapped).

An id is taken for the Hub only when it is not a path that exists, so a local folder named
like an id is always read as the local folder, and the shared app's path check (see
``ui.workspace``) can tell the two apart. Without network the read fails at once with the
id named, as a model download does, instead of ``datasets``' retries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError
from .messages import Message

# org/name[:split]: Hub names are letters, digits, '-', '_' and '.', never '..' or a path.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*"
                    r"(:[A-Za-z0-9][A-Za-z0-9_.\[\]%:-]*)?$")
PROBE_TIMEOUT_S = 10


def is_hub_id(text: str, roots: tuple[Path, ...] = ()) -> bool:
    """``org/name`` or ``org/name:split`` that names no existing file or folder (here, or
    under any of ``roots``)."""
    text = str(text).strip()
    if not HUB_ID.match(text) or ".." in text:
        return False
    name = text.split(":", 1)[0]
    return not any((root / candidate).exists() for root in (Path("."), *roots)
                   for candidate in (text, name))


def split_hub_id(text: str) -> tuple[str, str]:
    """(dataset id, split); the split is ``train`` when not named."""
    name, _, split = text.strip().partition(":")
    return name, split or "train"


def no_network_message(text: str) -> str:
    return (f"cannot download the dataset '{text}' from the Hugging Face Hub (no network, "
            "or it is not in this machine's datasets cache): download its file elsewhere and "
            "give the local path as data.path")


def hub_offline() -> bool:
    """Offline mode as ``datasets`` itself read it (HF_HUB_OFFLINE when it was imported)."""
    from datasets import config
    return bool(config.HF_HUB_OFFLINE)


def load_hub_dataset(text: str):
    """The split as a ``datasets.Dataset``, or ``DataError`` naming the id: without network
    in well under a second (a short probe first, instead of the library's retries)."""
    name, split = split_hub_id(text)
    if not hub_offline():
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
        try:
            HfApi().dataset_info(name, timeout=PROBE_TIMEOUT_S)
        except RepositoryNotFoundError:
            raise DataError(Message("hub.no_dataset", name=name)) from None
        except Exception:  # DNS, refused, timed out, proxy: all mean "cannot reach the Hub"
            raise DataError(no_network_message(text)) from None
    from datasets import load_dataset
    try:
        return load_dataset(name, split=split)
    except ConnectionError:  # offline mode, and not in the cache
        raise DataError(no_network_message(text)) from None
    except (ValueError, KeyError, FileNotFoundError) as exc:  # an unknown split, no files
        raise DataError(Message("hub.dataset_failed", name=text,
                                why=str(exc).strip().splitlines()[0][:300])) from None


def hub_rows(text: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a Hub dataset's split, "row 1" onwards."""
    for number, row in enumerate(load_hub_dataset(text), start=1):
        yield f"row {number}", row
