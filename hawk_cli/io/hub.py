"""Hub ids, checked before any download is tried: offline (HF_HUB_OFFLINE=1) or without a network, a model that
is not in the local cache fails at once in one line naming the fix (a local folder), instead of the hub client's
retries (a dozen lines over about 30 s). A cached model loads from the cache without touching the network."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
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


def is_cached(repo_id: str) -> bool:
    """Whether the model's config is in the local hub cache (the rest is checked when it loads)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def resolve_hub_id(repo_id: str) -> bool:
    """For a hub id: whether to load from the local cache only (True), or from the hub (False); a ModelError,
    raised before any download is tried, when neither can work."""
    offline = offline_by_setting()
    reachable = False if offline else hub_reachable()
    if offline or not reachable:
        if is_cached(repo_id):
            return True
        why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "the hub cannot be reached (no network)"
        folder = repo_id.split("/")[-1]
        raise ModelError(
            f"'{repo_id}' is a hub id, {why}, and the model is not in the local cache",
            f"Pass a local folder ({{model=}}./{folder}): download it where there is a network "
            f"('hf download {repo_id} --local-dir {folder}') and copy it here",
        )
    return False
