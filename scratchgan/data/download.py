"""Download once, verify, cache atomically: what MNIST / Fashion-MNIST (mnist.py) and CIFAR-10 (cifar10.py) share.

``fetch`` tries the mirrors in order and returns the first file that ``verify`` accepts; each download is
written to a temp file beside its final name and renamed only once verified (fileio.atomic_path), so the
cache never holds a half or foreign file, Ctrl-C included. A download that grows past ``limit`` bytes is
cut off there. Mirrors are HTTPS: the checksums protect the content, TLS the transfer.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..fileio import atomic_path
from .idx import DataError, shown

DEFAULT_TIMEOUT = 30.0  # seconds per connection attempt and per read
_CHUNK = 1 << 16
_USER_AGENT = "scratchgan (python urllib)"  # some mirrors refuse urllib's default agent
_WRITABLE = "set SCRATCHGAN_DATA to a writable folder or pass --data-dir DIR"


class DownloadError(DataError):
    """The files are neither on this machine nor could they be downloaded.

    ``reason`` holds a short account of what was tried (for a one-line log message).
    """

    def __init__(self, message, reason=""):
        super().__init__(message)
        self.reason = reason or message


class Mismatch(Exception):
    """A downloaded file that is not the official one (``verify`` raises it)."""


def sha256_file(path):
    """The SHA-256 hex digest of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe(error, timeout):
    """A short, one-line account of why one URL failed."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason  # the socket error behind it, or a text
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    text = str(error) or type(error).__name__
    return " ".join(text.split())  # one line, whatever the exception put in


def download(url, final, limit, verify, timeout=DEFAULT_TIMEOUT, too_big=None):
    """Fetch ``url`` into ``final`` atomically: at most ``limit`` bytes (else Mismatch(``too_big``)), then
    ``verify(sha256 hex digest, temp path, size)``, which raises Mismatch for a file that is not the one wanted."""
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(final, suffix=".part"))
        except OSError as e:  # not a mirror's fault: say so instead of trying the next one
            raise DataError(f"cannot write to the cache folder {shown(final.parent)} ({e.strerror or e}); "
                            f"{_WRITABLE}") from None
        digest, size = hashlib.sha256(), 0
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with open(tmp, "wb") as f, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise Mismatch(too_big or f"served more than {limit:,} bytes; not the dataset file")
                digest.update(chunk)
                f.write(chunk)
        verify(digest.hexdigest(), Path(tmp), size)


def fetch(name, folder, mirrors, get, *, timeout=DEFAULT_TIMEOUT, log=None, title="", supply="", note=""):
    """Download file ``name`` (of dataset ``title``) into the cache ``folder`` from the first of ``mirrors``
    (base URLs, or full URLs ending in ``name``) where ``get(url, final)`` (a ``download``) succeeds; its
    path. DownloadError naming every URL tried and why, then ``supply``: how to supply the file instead.
    ``note`` follows each "downloading URL" line (e.g. the size)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {shown(folder)} ({e.strerror or e}); {_WRITABLE}") from None
    final = folder / name
    failures = []
    for base in mirrors:
        url = base if base.endswith(name) else base.rstrip("/") + f"/{name}"
        if log:
            log(f"downloading {url}{note}")
        try:
            get(url, final)
            return final
        except (Mismatch, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            failures.append((url, describe(e, timeout)))
            if log:
                log(f"{url}: {failures[-1][1]}")
    tried = "; ".join(f"{url} ({why})" for url, why in failures) or "no mirror configured"
    whys = {why for _, why in failures}
    if len(failures) > 1 and len(whys) == 1:  # offline: every mirror fails the same way, say it once
        reason = f"{whys.pop()}, from all {len(failures)} mirrors"
    else:
        reason = "; ".join(f"{urllib.parse.urlsplit(url).netloc or url}: {why}" for url, why in failures)
    raise DownloadError(f"could not download {name}{f' for {title}' if title else ''}: tried {tried}; {supply}",
                        reason=reason or "no mirror configured")
