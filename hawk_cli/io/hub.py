"""Hub ids, checked before any download is tried: offline (HF_HUB_OFFLINE=1) or without a network, a model that
is not in the local cache fails at once in one line naming the fix (a local folder), instead of the hub client's
retries (a dozen lines over about 30 s). A cached model loads from the cache without touching the network."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from hawk_cli.errors import ModelError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 3.0  # name lookup and connection together; a reachable hub answers in well under a second
_TRUE = {"1", "ON", "YES", "TRUE"}


def offline_by_setting() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set, as the hub client and transformers read them."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(endpoint: str | None = None, seconds: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers an HTTP request within `seconds`, whatever the answer's status. HTTP, not just a
    TCP connection: a proxy or firewall may accept connections it never completes. The request runs on a thread,
    since a name lookup without a network can wait longer than any socket timeout. Proxies in the environment
    are used, as the hub client uses them."""
    url = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if urlparse(url).scheme not in ("http", "https"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=seconds).close()
            result.append(True)
        except urllib.error.HTTPError:  # an answer, even an error status: the hub is there
            result.append(True)
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, name="hawk-hub-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


def cached_snapshot(repo_id: str) -> str | None:
    """The local folder of the model's cached snapshot (its config there), or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here means "not usable from the cache"
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def resolve_hub_id(repo_id: str) -> str:
    """Where to load a hub id from: the id itself when the hub answers, else the cached snapshot's folder (so
    nothing below tries the network and retries); a ModelError, before any download is tried, when neither."""
    offline = offline_by_setting()
    reachable = False if offline else hub_reachable()
    if offline or not reachable:
        snapshot = cached_snapshot(repo_id)
        if snapshot is not None:
            return snapshot
        why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "the hub cannot be reached (no network)"
        folder = repo_id.split("/")[-1]
        raise ModelError(
            f"'{repo_id}' is a hub id, {why}, and the model is not in the local cache",
            f"Pass a local folder ({{model=}}./{folder}): download it where there is a network "
            f"('hf download {repo_id}' prints where it went) and copy that folder here",
        )
    return repo_id
