"""Fail fast without network: probe the hub once, switch the HF libraries to offline mode if it is unreachable.

For models and datasets alike: it loads nothing itself. Models load in :mod:`autolora_exp.models`,
hub datasets in :mod:`autolora_exp.data.hub_datasets` (which asks :func:`hub_reachable` again
before each load).

Without this, a model or dataset that is not cached costs about a minute of connection
retries before the libraries give up. With it, cached assets still load from the cache and a
missing one fails at once with :class:`~autolora_exp.errors.AssetMissingError`.
Must run before ``huggingface_hub``/``transformers``/``datasets`` are imported: they read the
offline switches at import time.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger(__name__)

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: the switches set when the hub is unreachable. Not HF_DATASETS_OFFLINE: ``datasets`` 5 derives
#: its hub switch from HF_HUB_OFFLINE, and HF_DATASETS_OFFLINE stays the user's "no network at
#: all", which also stops the release downloads of :mod:`autolora_exp.data.release` (GitHub,
#: GitLab: reachable where the hub is not, e.g. behind a firewall that blocks only the hub)
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_reachable(endpoint: str | None = None, timeout: float = 2.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout`` seconds. With a
    proxy configured a direct probe says nothing: the hub is assumed reachable."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def configure_offline_mode() -> bool:
    """Set the HF offline switches when the hub cannot be reached; returns True when offline."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in OFFLINE_VARS):
        return True
    if hub_reachable():
        return False
    for var in HUB_OFFLINE_VARS:
        os.environ[var] = "1"
    log.info("Hugging Face hub unreachable: offline mode (only cached or local models and data)")
    return True
