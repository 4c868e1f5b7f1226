"""Loading a dataset from the Hugging Face hub, failing fast and clearly without network.

Shared by the loaders whose data also comes as local official files (BioNLP, E2E, WebNLG):
with the hub unreachable only the local cache is tried (instead of ~25 s of retries), a
repository that still ships a loading script (unsupported since datasets 4) is read from the
hub's parquet export, and a miss is one line naming the ``task.data_dir`` alternative.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets

from autolora_exp.errors import AssetMissingError, UserError
from autolora_exp.hub_offline import hub_reachable

#: the revision under which the hub keeps an automatic parquet copy of every dataset repository
PARQUET_EXPORT_REVISION = "refs/convert/parquet"


class HubLoadError(UserError):
    """The Hub was reachable but the dataset could not be loaded from it (no such repository, a
    script-based repository without a parquet export, an HTTP error)."""


@contextmanager
def offline_mode(enabled: bool) -> Iterator[None]:
    """Turn on huggingface_hub's and datasets' offline flags for the duration of one load.

    Both libraries read the flag from a module constant set at import, so this is the only switch
    that takes effect after import; the previous values are restored."""
    if not enabled:
        yield
        return
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def load_hub_dataset(hub_id: str, config: str | None, what: str, local_hint: str) -> datasets.DatasetDict:
    """``load_dataset(hub_id, config)``, failing fast and clearly when the Hub is out of reach.

    A local folder in a hub repository's layout (a mirror, a test fixture) is read directly
    (``<folder>/<config>/`` when present). Offline or with the Hub unreachable only the local
    cache is tried; a repository that ships a loading script is read from its parquet export.
    The Hub route failing is an :class:`AssetMissingError` (offline, not cached) or a
    :class:`HubLoadError`; a bad local folder is a plain :class:`UserError`.
    """
    if os.path.isdir(hub_id):
        kwargs = {"data_dir": config} if config and (Path(hub_id) / config).is_dir() else {}
        try:
            return datasets.load_dataset(hub_id, **kwargs)
        except FileNotFoundError as err:  # DataFilesNotFoundError, EmptyDatasetError
            raise UserError(f"{what} folder {hub_id!r} holds no data files in a hub layout ({err}); "
                            f"pass {local_hint} for the official files") from None
    offline = bool(datasets.config.HF_HUB_OFFLINE) or not hub_reachable()
    try:
        with offline_mode(offline):
            try:
                return datasets.load_dataset(hub_id, config)
            except RuntimeError as err:
                if "Dataset scripts are no longer supported" not in str(err):
                    raise
                kwargs = {"data_dir": config} if config else {}
                return datasets.load_dataset(hub_id, revision=PARQUET_EXPORT_REVISION, **kwargs)
    # ConnectionError (offline), DatasetNotFoundError/FileNotFoundError (no such repo or files) and
    # huggingface_hub's HTTP errors (e.g. a repository without a parquet export) are all OSError
    except OSError as err:
        if offline:
            raise AssetMissingError(
                f"{what} data {hub_id!r} is not in the Hugging Face cache and the Hub is offline or "
                f"unreachable; pass {local_hint} (the official files) instead") from None
        raise HubLoadError(f"{what} data {hub_id!r} could not be loaded from the Hub ({type(err).__name__}: {err}); "
                        f"pass {local_hint} instead") from None
