"""Downloading weights by URL into a local cache, atomically, with a clear error when offline."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .io_utils import atomic_write

log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A download that failed; the message says what to do offline."""


def cache_dir() -> Path:
    """``$VQGAN_CORE_CACHE`` or ``~/.cache/vqgan_core`` (XDG_CACHE_HOME respected)."""
    env = os.environ.get("VQGAN_CORE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vqgan_core"


def _filename_for(url: str, name: str | None = None) -> str:
    parsed = urllib.parse.urlparse(url)
    # heibox-style links carry the file name in ?p=/ckpts/last.ckpt; prefix a hash so names never collide.
    query_path = urllib.parse.parse_qs(parsed.query).get("p", [""])[0]
    name = os.path.basename(query_path or parsed.path) or name or "download.bin"  # the link's own name first
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


DEAD_LINK_HINT = ("the link it came from is probably dead or needs a login (heibox and other hosts answer with "
                  "an error page); download it again from a working mirror")


def is_web_page(path: str | os.PathLike) -> bool:
    """True for an HTML page saved under a model's name: what a dead download link leaves behind."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def download(url: str, dest_dir: str | os.PathLike | None = None, sha256: str | None = None, timeout: float = 60.0,
             name: str | None = None) -> Path:
    """Fetch ``url`` once into the cache and return the local path (re-used on later calls). ``name``: the file
    name to keep for a link that carries none (a link's own name always wins: files cached earlier stay found)."""
    dest = Path(dest_dir) if dest_dir else cache_dir()
    target = dest / _filename_for(url, name)
    if target.is_file() and (sha256 is None or file_sha256(target) == sha256):
        return target
    log.info("downloading %s -> %s", url, target)

    def _fetch(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:  # noqa: S310 - http(s) only
                if resp.headers.get_content_type() == "text/html":  # never a model, config or image
                    raise DownloadError(f"{url} answered with a web page (HTML), not the file: {DEAD_LINK_HINT}")
                shutil.copyfileobj(resp, out, length=1 << 20)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise DownloadError(
                f"could not download {url}: {e}. If this machine is offline, download the file elsewhere and pass "
                "its local path instead."
            ) from None
        if sha256 is not None and file_sha256(tmp) != sha256:
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}")

    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    return atomic_write(target, _fetch)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
