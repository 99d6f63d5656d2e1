"""Robust HTTP downloads into a cache that outlives DVC outputs.

Every file goes to `cache_dir()` (outside the repo's DVC outputs), keyed by its URL, so
re-runs, `dvc exp run` and `dvc exp run --queue` (which works in a temporary copy)
never download the same file twice. What a download does:

- connect and read timeouts, and retries with exponential backoff on dropped
  connections, timeouts and 5xx/429 answers (never on 404/403: retrying won't help);
- resume: the partial file stays as `<name>.part`, and the next attempt asks for the
  rest with an HTTP Range request;
- integrity: md5/sha256 checked where published; a mismatch deletes the partial file
  and stops with a clear error, so nothing half-good is ever kept;
- atomic: the file appears under its final name only once complete and verified;
- one writer: a lock per cached file, so processes that share the cache (two projects,
  parallel queued experiments) never write one file at once; the second waits, then
  uses the first one's file;
- parallel: `fetch_many` runs a thread pool behind one progress bar, in bytes.

Every failure is a `DownloadError` with one line that names the URL and says what to do.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from colorize.common.errors import UserError

CACHE_ENV = "COLORIZE_CACHE_DIR"
CHUNK = 1 << 16


class DownloadError(UserError):
    """A download that cannot complete; the message names the URL and the remedy."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class Transfer:
    workers: int = 8  # parallel downloads
    connect_timeout: float = 10.0  # seconds to establish a connection
    read_timeout: float = 60.0  # seconds of silence before a read gives up
    retries: int = 4  # extra attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time

    @classmethod
    def from_params(cls, p: dict) -> "Transfer":
        return cls(
            workers=p["workers"],
            connect_timeout=p["connect_timeout"],
            read_timeout=p["read_timeout"],
            retries=p["retries"],
            backoff=p["backoff"],
        )


def cache_dir() -> Path:
    """$COLORIZE_CACHE_DIR, else $XDG_CACHE_HOME/colorize, else ~/.cache/colorize."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "colorize"


def cached_path(url: str) -> Path:
    """Where `url` lives in the cache: a folder per URL, the file under its own name."""
    name = Path(unquote(urlparse(url).path)).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / "downloads" / key / name


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Progress:
    """One byte-counting bar shared by every worker thread."""

    def __init__(self, desc: str, enabled: bool = True):
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)
        self.lock = threading.Lock()

    def expect(self, n: int) -> None:
        with self.lock:
            self.bar.total += n
            self.bar.refresh()

    def advance(self, n: int) -> None:
        with self.lock:
            self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def fetch(
    url: str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    transfer: Transfer = Transfer(),
    progress: _Progress | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Return the cached path of `url`, downloading it first if needed."""
    dest = cached_path(url)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _only_fetcher(dest, url):
        if dest.exists():  # another process fetched it while we waited
            return dest
        _download(url, dest, md5, sha256, transfer, progress, session or requests.Session())
    return dest


@contextmanager
def _only_fetcher(dest: Path, url: str):
    """Hold the cached file's lock while fetching it. The cache is shared (two projects,
    parallel queued experiments): two processes appending to one `.part` file made a
    corrupt file that stayed in the cache, and the second one's rename a traceback.
    The kernel drops the lock when its holder dies, kill -9 included."""
    with open(dest.with_name(dest.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            tqdm.write(f"{url}: another process is downloading it into {dest.parent}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _download(url: str, dest: Path, md5: str | None, sha256: str | None, transfer: Transfer,
              progress: _Progress | None, session: requests.Session) -> None:
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _transfer(url, part, transfer, progress, session)
            break
        except _Retryable as e:
            if attempt >= transfer.retries:
                raise DownloadError(
                    f"{url}: {e} after {attempt + 1} attempts; check the network or point the "
                    f"source's base URL param at a mirror (the partial file is kept for resume)"
                ) from None
            time.sleep(transfer.backoff * 2**attempt)
            attempt += 1
    _verify(url, part, md5=md5, sha256=sha256)
    os.replace(part, dest)


def _transfer(url: str, part: Path, transfer: Transfer, progress: _Progress | None, session: requests.Session) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = session.get(url, stream=True, headers=headers, timeout=(transfer.connect_timeout, transfer.read_timeout))
    except requests.exceptions.ConnectionError as e:
        raise _Retryable(f"cannot connect ({_reason(e)}); no network?") from None
    except requests.exceptions.Timeout:
        raise _Retryable("timed out") from None
    with resp:
        if resp.status_code == 416 and have:
            part.unlink()  # our partial file is longer than the remote one: start over
            raise _Retryable("stale partial file (HTTP 416)")
        if resp.status_code in (404, 403, 401, 410):
            raise DownloadError(
                f"{url}: HTTP {resp.status_code} {resp.reason}; the file is not available there: "
                f"check the URL params (data.*) or use a mirror"
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code not in (200, 206):
            raise DownloadError(f"{url}: unexpected HTTP {resp.status_code} {resp.reason}")
        resuming = resp.status_code == 206
        if not resuming:
            have = 0  # the server ignored our Range: take the whole body again
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        if progress and length is not None:
            progress.expect(int(length))
        got = have
        try:
            with open(part, "ab" if resuming else "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress.advance(len(chunk))
        # requests' errors subclass OSError, so they must be caught before it.
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise _Retryable(f"connection dropped after {got} bytes ({_reason(e)})") from None
        except requests.exceptions.Timeout:
            raise _Retryable(f"read timed out after {got} bytes") from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DownloadError(
                    f"{url}: disk full while writing {part}; free space or set {CACHE_ENV} to a larger disk"
                ) from None
            raise
        if expected is not None and got < expected:
            raise _Retryable(f"connection dropped after {got} of {expected} bytes")


def _verify(url: str, part: Path, md5: str | None, sha256: str | None) -> None:
    for algorithm, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(part, algorithm)
            if got != want.lower():
                part.unlink()
                raise DownloadError(
                    f"{url}: checksum mismatch ({algorithm} {got}, expected {want}); the download "
                    f"was deleted: rerun to fetch it again, or check that the mirror serves the right file"
                )


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset",
                   "IncompleteRead", "Connection broken"):
        if marker in text:
            return marker
    return type(e).__name__


@dataclass
class Result:
    url: str
    path: Path | None  # None when it failed
    error: str = ""


def fetch_many(
    items: list[dict],
    transfer: Transfer,
    desc: str = "download",
    fail_fast: bool = True,
    progress: bool = True,
) -> list[Result]:
    """Download `items` ({"url", optional "md5"/"sha256"}) in parallel, in order.

    With `fail_fast`, the first failure raises; otherwise each failure is returned as a
    Result with its one-line error, so the caller can record it instead of losing it.
    """
    bar = _Progress(desc, enabled=progress)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(transfer.workers, 10))
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def one(item: dict) -> Result:
        try:
            path = fetch(item["url"], md5=item.get("md5"), sha256=item.get("sha256"),
                         transfer=transfer, progress=bar, session=session)
            return Result(item["url"], path)
        except DownloadError as e:
            if fail_fast:
                raise
            return Result(item["url"], None, str(e))

    try:
        with ThreadPoolExecutor(max_workers=transfer.workers) as pool:
            return list(pool.map(one, items))
    finally:
        bar.close()
        session.close()
