"""Downloading weights by URL into a local cache, safely for a server that downloads on behalf of clients.

A download goes to ``<file>.part`` first (resumed with an HTTP ``Range`` request after a broken connection
when the server supports it), is checked against ``Content-Length`` and, when one is known, a published
sha256, and is moved into place atomically only when complete. The sha256 of every completed download is
recorded beside it (``<file>.sha256``, ``sha256sum`` format) and checked whenever the cached file is used, so
a file damaged or truncated later is named with what to do instead of failing deep inside a loader.

Every read has a timeout, a stalled stream (less than ``_MIN_PROGRESS`` bytes per timeout window: a server
dripping one byte every few seconds) is abandoned, the size is capped, and ``check_interrupt`` (e.g. ComfyUI's
``throw_exception_if_processing_interrupted``) is called between chunks so a user can cancel.

:func:`url_allowed` is the server owner's allow-list for URLs sent by clients (``$VQGAN_CLIP_ALLOWED_URLS``).

Why not ``torch.hub.download_url_to_file``: no resume (its temporary file is deleted on failure), no timeout, stall
rule, size cap, Content-Length check or Cancel, only a tqdm bar on stderr where ComfyUI needs a progress callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..util.web_page import DEAD_LINK_HINT

log = logging.getLogger(__name__)

ALLOWED_URLS_ENV = "VQGAN_CLIP_ALLOWED_URLS"
MAX_BYTES_ENV = "VQGAN_CORE_MAX_DOWNLOAD_BYTES"
DEFAULT_MAX_BYTES = 16 << 30  # larger than any VQGAN or open_clip checkpoint (ViT-bigG is ~10 GB)
_CHUNK = 1 << 20
_MIN_PROGRESS = 1024  # bytes that must arrive within every `timeout` window, or the download counts as stalled
OFFLINE_HINT = "If this machine is offline, download the file elsewhere and pass its local path instead."

Progress = Callable[[int, int | None], object]
"""``progress(received, total)``: bytes of the file so far (a resumed download starts above 0) and its expected
size (None when the server sends none); called when the transfer starts and after every chunk."""


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


# -- the server owner's allow-list ----------------------------------------------------------------------
def allowed_url_prefixes() -> list[str]:
    """URL prefixes in ``$VQGAN_CLIP_ALLOWED_URLS`` (separated by spaces or commas); non-http(s) ones are ignored."""
    raw = os.environ.get(ALLOWED_URLS_ENV, "")
    out = []
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        if item.lower().startswith(("http://", "https://")):
            out.append(item)
        else:
            log.warning("%s: ignoring %r (only http:// and https:// prefixes can be allowed)", ALLOWED_URLS_ENV, item)
    return out


def url_allowed(url: str, prefixes: list[str] | None = None) -> bool:
    """True when ``url`` lies under one of ``prefixes`` (default: :func:`allowed_url_prefixes`).

    Compared by parts, not as strings, so ``https://host.evil/`` never matches ``https://host``: same scheme,
    same host and port (no user info), and the path equals the prefix's or lies below it. Paths with ``.``/``..``
    segments or backslashes are refused (servers normalise them: they could leave the allowed folder).
    """
    prefixes = allowed_url_prefixes() if prefixes is None else prefixes
    try:
        u = urllib.parse.urlsplit(url)
        u.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    if u.scheme.lower() not in ("http", "https") or not u.hostname:
        return False
    path = urllib.parse.unquote(u.path)
    if "\\" in path or any(seg in (".", "..") for seg in path.split("/")):
        return False
    for prefix in prefixes:
        if url == prefix:
            return True
        try:
            p = urllib.parse.urlsplit(prefix)
        except ValueError:
            continue
        if p.scheme.lower() != u.scheme.lower() or p.netloc.lower() != u.netloc.lower() or p.query or p.fragment:
            continue
        ppath = urllib.parse.unquote(p.path)
        if ppath in ("", "/") or path == ppath or path.startswith(ppath if ppath.endswith("/") else ppath + "/"):
            return True
    return False


def max_download_bytes() -> int:
    """The size cap: ``$VQGAN_CORE_MAX_DOWNLOAD_BYTES`` or 16 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV)
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        return int(raw)
    except ValueError:
        raise DownloadError(f"{MAX_BYTES_ENV}={raw!r} is not a whole number of bytes (e.g. 4000000000)") from None


# -- checksums ------------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<file>.sha256``: the digest recorded when a download completed."""
    return Path(f"{os.fspath(path)}.sha256")


def _read_sidecar(path: Path) -> str | None:
    side = sidecar_path(path)
    try:
        token = side.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return token if re.fullmatch(r"[0-9a-f]{64}", token) else None


def _write_sidecar(path: Path, digest: str) -> None:
    from ..util.atomic import atomic_write_bytes

    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n")


_VERIFIED: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256): hash each cached file once


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    known = _VERIFIED.get(str(path))
    if known and known[:2] == (st.st_size, st.st_mtime_ns):
        return known[2]
    digest = file_sha256(path)
    _VERIFIED[str(path)] = (st.st_size, st.st_mtime_ns, digest)
    return digest


def verify_cached(path: str | os.PathLike, sha256: str | None = None, url: str | None = None) -> None:
    """Check a cached download against ``sha256`` (a published hash) or its recorded ``<file>.sha256``.

    A file cached before digests were recorded, with no published hash, cannot be checked and passes.
    Raises DownloadError naming the file and what to do when it does not match.
    """
    path = Path(path)
    recorded = _read_sidecar(path)
    expected = (sha256 or recorded or "").lower() or None
    if expected is None:
        log.debug("cached %s has no recorded sha256 (downloaded by an older version); not checked", path)
        return
    actual = _cached_sha256(path)
    if actual != expected:
        source = "the published sha256" if sha256 else f"the sha256 recorded at download ({sidecar_path(path)})"
        raise DownloadError(
            f"the cached download {path}{f' (from {url})' if url else ''} is damaged or was changed: its sha256 "
            f"{actual} differs from {source}, {expected}. Delete {path} and {sidecar_path(path)} to download it again.")
    if recorded is None:
        _write_sidecar(path, actual)


# -- the download itself --------------------------------------------------------------------------------
def _opener() -> urllib.request.OpenerDirector:
    """http(s) only, redirects included (no ftp://, file:// or data: even after a redirect); proxies honoured."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _part_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")


def _read_meta(meta: Path, url: str) -> dict:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("url") == url else {}


@contextlib.contextmanager
def _locked(fh: IO[bytes], part: Path) -> Iterator[None]:
    """An exclusive lock on the partial file: two processes never write the same ``.part``."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a concurrent download of one file is unlikely there
        yield
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise DownloadError(f"{part} is being downloaded by another process; wait for it to finish "
                            "(or stop it and run again)") from None
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes 100-199/200`` -> (100, 200); total None for ``*``."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return (int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))) if m else None


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fetch(url: str, target: Path, timeout: float, max_bytes: int,
           check_interrupt: Callable[[], object] | None, *, allow_resume: bool = True,
           progress: Progress | None = None) -> None:
    """Download ``url`` into ``<target>.part`` (resuming it when possible); raise unless it arrived complete."""
    part, meta_path = _part_paths(target)
    meta = _read_meta(meta_path, url) if allow_resume else {}
    offset = part.stat().st_size if meta and part.is_file() else 0
    headers = {"User-Agent": "vqgan_core", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):  # the server sends the whole file again when it changed since
            headers["If-Range"] = meta["validator"]
    if check_interrupt is not None:
        check_interrupt()
    try:
        resp = _opener().open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the partial file does not fit the server's file: start again
            log.info("server refused to resume %s (HTTP 416); downloading it again", url)
            e.close()
            _remove(part, meta_path)
            return _fetch(url, target, timeout, max_bytes, check_interrupt, allow_resume=False, progress=progress)
        e.close()
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}. {OFFLINE_HINT}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as e:
        raise DownloadError(f"could not download {url}: {getattr(e, 'reason', e)}. {OFFLINE_HINT}") from None
    with resp:
        if resp.headers.get_content_type() == "text/html":  # never a model, config or image
            raise DownloadError(f"{url} answered with a web page (HTML), not the file: {DEAD_LINK_HINT}")
        rng = _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else None
        if offset and resp.status == 206 and rng and rng[0] == offset and rng[1] in (None, meta.get("total")):
            start, total = offset, rng[1]
            log.info("resuming %s at byte %d", url, offset)
        elif resp.status == 206:  # not the part asked for, or the file's size changed since: start again
            if not offset:
                raise DownloadError(f"{url}: the server sent part of the file (Content-Range "
                                    f"{resp.headers.get('Content-Range')!r}) where the whole file was asked for")
            log.info("cannot resume %s (Content-Range %r); downloading it again", url, resp.headers.get("Content-Range"))
            resp.close()
            _remove(part, meta_path)
            return _fetch(url, target, timeout, max_bytes, check_interrupt, allow_resume=False, progress=progress)
        else:
            length = resp.headers.get("Content-Length")
            start, total = 0, int(length) if length and length.strip().isdigit() else None
        if total is not None and total > max_bytes:
            raise DownloadError(f"{url} is {total:,} bytes, more than the {max_bytes:,}-byte limit; raise "
                                f"{MAX_BYTES_ENV} if this file is wanted")
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or (
            meta.get("validator") if start else None)
        received = _stream(resp, part, start, url, total, timeout, max_bytes, check_interrupt,
                           meta={"url": url, "validator": validator, "total": total if total is not None or not start
                                 else meta.get("total")}, meta_path=meta_path, progress=progress)
    if total is not None and received != total:
        raise DownloadError(f"could not download {url}: the connection closed after {received:,} of {total:,} bytes. "
                            f"The partial file is kept ({part}); run again to resume.")
    if total is None:
        log.warning("%s sent no Content-Length: its size could not be checked", url)
    return None


def _stream(resp: IO[bytes], part: Path, start: int, url: str, total: int | None, timeout: float, max_bytes: int,
            check_interrupt: Callable[[], object] | None, meta: dict, meta_path: Path,
            progress: Progress | None = None) -> int:
    """Copy the response into ``part`` from byte ``start``; returns the file's size. The partial file stays
    behind on a timeout, a stall, a broken connection or an interrupt (the next call resumes it)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    with os.fdopen(fd, "r+b") as out, _locked(out, part):
        out.truncate(start)
        out.seek(start)
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        received, too_big = start, False
        mark_time, mark_bytes = time.monotonic(), received
        if progress is not None:
            progress(received, total)
        while True:
            if check_interrupt is not None:
                check_interrupt()  # raises (e.g. ComfyUI's InterruptProcessingException): keep what arrived
            try:
                chunk = resp.read1(_CHUNK)  # whatever has arrived: a slow server cannot hold us in one read
            except TimeoutError:
                raise DownloadError(f"could not download {url}: no data for {timeout:g} s (read timeout). The "
                                    f"partial file is kept ({part}); run again to resume.") from None
            except (ConnectionError, OSError, http.client.HTTPException) as e:
                raise DownloadError(f"could not download {url}: connection lost after {received:,} bytes ({e}). "
                                    f"The partial file is kept ({part}); run again to resume.") from None
            if not chunk:
                break
            received += len(chunk)
            if received > max_bytes or (total is not None and received > total):
                too_big = True
                break
            out.write(chunk)
            if progress is not None:
                progress(received, total)
            now = time.monotonic()
            if received - mark_bytes >= _MIN_PROGRESS:
                mark_time, mark_bytes = now, received
            elif now - mark_time > timeout:
                raise DownloadError(f"could not download {url}: stalled (less than {_MIN_PROGRESS} bytes in "
                                    f"{timeout:g} s). The partial file is kept ({part}); run again to resume.")
        out.flush()
        os.fsync(out.fileno())
    if too_big:
        _remove(part, meta_path)
        limit, what = (total, "the size it announced") if total is not None and total <= max_bytes else (
            max_bytes, "the size limit")
        raise DownloadError(f"{url} sent more than {limit:,} bytes ({what}); the download was stopped and deleted. "
                            f"Raise {MAX_BYTES_ENV} if this file is wanted.")
    return received


def download(url: str, dest_dir: str | os.PathLike | None = None, sha256: str | None = None, timeout: float = 60.0,
             name: str | None = None, *, filename: str | None = None, max_bytes: int | None = None,
             check_interrupt: Callable[[], object] | None = None, progress: Progress | None = None) -> Path:
    """Fetch ``url`` once into the cache and return the local path (re-used, after a checksum check, later).

    Args:
        name: the file name to keep for a link that carries none (a link's own name always wins: files cached
            earlier stay found).
        sha256: the published digest, when known; otherwise the digest of the first complete download is recorded.
        timeout: seconds allowed for connecting and for each read, and the window in which at least 1 KiB must
            arrive (a server that drips bytes is abandoned).
        max_bytes: size cap (default ``$VQGAN_CORE_MAX_DOWNLOAD_BYTES`` or 16 GiB).
        check_interrupt: called between chunks; whatever it raises stops the download (the partial file is kept
            and resumed by the next call).
        filename: the exact file name to save as in ``dest_dir`` (no hash prefix): for a folder people browse, such
            as ComfyUI's models/vqgan, where the name is what they choose and what they put there by hand.
        progress: ``progress(received, total)`` (see :data:`Progress`), e.g. to drive a progress bar.
    """
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    if filename is not None and (not filename or filename in (".", "..") or "/" in filename or "\\" in filename
                                 or "\x00" in filename):
        raise DownloadError(f"download file name must be a plain file name, got {filename!r}")
    dest = Path(dest_dir) if dest_dir else cache_dir()
    target = dest / (filename or _filename_for(url, name))
    if target.is_file():
        verify_cached(target, sha256, url)
        return target
    cap = max_download_bytes() if max_bytes is None else int(max_bytes)
    log.info("downloading %s -> %s", url, target)
    _fetch(url, target, timeout, cap, check_interrupt, progress=progress)
    part, meta_path = _part_paths(target)
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256.lower():
        _remove(part, meta_path)
        raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; the download was "
                            "deleted. Run again, or use another mirror.")
    _write_sidecar(target, digest)  # before the file: a file in place always has its digest beside it
    # not util.atomic.atomic_write: the .part is the resumable download itself (kept after a failure, locked
    # while written), so the complete one is renamed into place, not copied through a second temporary file
    os.replace(part, target)
    _remove(meta_path)
    _VERIFIED[str(target)] = (target.stat().st_size, target.stat().st_mtime_ns, digest)
    return target
