"""Official release files of a dataset: downloaded once, checked against a pinned SHA-256, cached.

The fallback route of the E2E and WebNLG loaders (:mod:`autolora_exp.data.nlg`) when the Hub
route fails: their hub repositories still ship loading scripts, and the Hub's parquet export of
such a repository may not exist. The files fetched here are the ones those loading scripts
download, with the digests their ``dataset_infos.json`` records.

Cache: ``<HF datasets cache>/autolora_exp_releases/<sha256>/<file name>`` (a zip is unpacked next
to it, into ``unpacked/``). A download is written to a temporary file while it is hashed and only
renamed into place when the digest matches, so the cache never holds an unchecked file; a cached
file is hashed again on every use.

Network: ``HF_DATASETS_OFFLINE=1`` (the ``datasets`` library's "no network calls" switch, which
the test suite sets) allows only cached files. ``HF_HUB_OFFLINE`` does not: it is about the Hub,
and these files come from GitHub/GitLab.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlparse

import datasets

from autolora_exp.atomic import atomic_build_folder, atomic_write
from autolora_exp.errors import AssetMissingError, UserError

log = logging.getLogger(__name__)

#: seconds without a byte from the server before a download is given up
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReleaseFile:
    """One file of an official release, pinned by its SHA-256."""

    url: str
    sha256: str

    @property
    def name(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name or "download"


def cache_root() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "autolora_exp_releases"


def downloads_allowed() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumMismatchError(UserError):
    """A downloaded release file does not have its pinned SHA-256 (nothing is cached)."""


def fetch(file: ReleaseFile, what: str) -> Path:
    """The cached, checked copy of ``file``, downloading it first when it is not cached.

    A wrong digest is a :class:`ChecksumMismatchError` naming the URL, the expected and the
    actual digest; a download that fails (or is not allowed) is an :class:`AssetMissingError`.
    """
    expected = file.sha256.lower()
    folder = cache_root() / expected
    path = folder / file.name
    if path.is_file():
        if sha256_of(path) == expected:
            return path
        log.warning("%s: cached %s does not match its SHA-256 any more; fetching it again", what, path)
        path.unlink()
    if not downloads_allowed():
        raise AssetMissingError(f"{what}: {file.url} is not cached under {folder} and HF_DATASETS_OFFLINE is set, "
                                "so it was not downloaded")
    log.info("%s: downloading %s", what, file.url)

    def download(out: IO[bytes]) -> None:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(file.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as err:  # URLError/HTTPError, timeouts, DNS, a cut connection
            if getattr(out, "error", None) is err:
                raise  # the disk, not the download: atomic_write names the file
            reason = getattr(err, "reason", None) or err
            raise AssetMissingError(f"{what}: could not download {file.url} ({type(err).__name__}: {reason})") from None
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(f"{what}: checksum mismatch for {file.url}: expected SHA-256 {expected}, "
                                        f"got {actual}; nothing was cached")

    try:
        return atomic_write(path, download)  # the file appears whole and checked, or not at all
    finally:
        try:
            folder.rmdir()  # only when empty: a failed first download leaves no folder behind
        except OSError:
            pass


def unpacked(archive: Path) -> Path:
    """The folder a fetched zip is unpacked into (``<its cache folder>/unpacked``), unpacking it
    on first use; members that would land outside that folder are refused."""
    target = archive.parent / "unpacked"

    def unpack(staging: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                dest = (staging / member).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise UserError(f"{archive}: member {member!r} would be written outside {target}")
            zf.extractall(staging)

    # a folder there is complete: another run unpacked the same archive first
    return atomic_build_folder(target, unpack, Path.is_dir)
