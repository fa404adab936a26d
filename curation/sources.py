"""Inputs: a folder, a text file of paths, or a Parquet/CSV manifest; each source gets a content id."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from curation.storage import file_info, is_url, list_url, open_url

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts",
                    ".wmv", ".3gp", ".mts"}
ID_HEX_DIGITS = 16
HASH_TIMEOUT_S = 600.0  # a multi-GB file on a slow disk takes minutes; a hung mount never ends
_END_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    path: str
    source_id: str  # the content id: see content_id
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class Unusable:
    """An input that cannot be a source, and why (missing, not a regular file, unreadable, too slow)."""

    path: str
    reason: str
    detail: str


def list_inputs(spec: str | Path) -> Iterator[str]:
    """Paths (or object URLs) named by `spec`, streamed (a manifest of millions of rows is never held
    whole): a folder or object prefix (searched recursively for video names), one video file, a text
    file with one path per line, or a .parquet/.csv manifest with a `path` column; each local or an
    object-store URL. Relative paths in a list resolve against the list's folder. Whatever a name
    points to (a folder called x.mp4, a FIFO, a broken or looping link) is listed here and judged by
    `identify`."""
    spec = str(spec)
    kind = _kind(spec)
    if kind == "directory":
        if is_url(spec):
            return iter(list_url(spec, VIDEO_EXTENSIONS))
        return (str(p.absolute()) for p in sorted(Path(spec).rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS)
    suffix = os.path.splitext(spec)[1].lower()
    if suffix in VIDEO_EXTENSIONS:
        return iter([_absolute(spec)])
    if suffix in (".parquet", ".csv"):
        paths = _manifest_paths(spec, suffix)
    elif _is_text(spec):
        paths = _listed_paths(spec)
    else:  # not a list: a video with a name we do not know, taken as one input
        return iter([_absolute(spec)])
    return (_resolve(spec, path) for path in paths)


def _kind(spec: str) -> str:
    try:
        return file_info(spec)[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"--input {spec}: no such file or folder") from None


def _manifest_paths(spec: str, suffix: str) -> Iterator[str]:
    with open_url(spec) as handle:
        if suffix == ".parquet":
            manifest = pq.ParquetFile(handle)
            if "path" not in manifest.schema_arrow.names:
                raise ValueError(f"--input {spec}: the manifest has no 'path' column ({manifest.schema_arrow.names})")
            for batch in manifest.iter_batches(batch_size=65536, columns=["path"]):
                yield from (p for p in batch.column(0).to_pylist() if p)
            return
        reader = csv.DictReader(io.TextIOWrapper(handle, newline=""))
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"--input {spec}: the manifest has no 'path' column ({reader.fieldnames})")
        yield from (row["path"] for row in reader if row["path"])


def _is_text(spec: str) -> bool:
    with open_url(spec) as handle:
        try:
            handle.read(4096).decode()
        except UnicodeDecodeError:
            return False
    return True


def _listed_paths(spec: str) -> Iterator[str]:
    with open_url(spec) as handle:
        for line in io.TextIOWrapper(handle):
            if line.strip() and not line.lstrip().startswith("#"):
                yield line.strip()


def _absolute(path: str) -> str:
    return path if is_url(path) else str(Path(path).resolve())


def _resolve(listing: str, path: str) -> str:
    """A listed path: a URL or an absolute path as it is, a relative one against the list's folder."""
    if is_url(path) or os.path.isabs(path):
        return path if is_url(path) else os.path.normpath(path)
    if is_url(listing):
        return posixpath.join(posixpath.dirname(listing), path)
    return os.path.normpath(Path(listing).parent.absolute() / path)


def identify(paths: Iterable[str], known: dict[tuple[str, int, int], str] | None = None,
             hash_timeout_s: float = HASH_TIMEOUT_S, threads: int = 8) -> Iterator[Source | Unusable]:
    """Each input as a Source with its content id, or as Unusable; in input order, streamed, read by
    `threads` at once (inputs on network storage are read at their latency, not one after another).
    An id recorded for the same path, size and mtime is reused without reading. Nothing here can
    block or stop the run."""
    known = known or {}
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future] = deque()
        for path in paths:
            pending.append(pool.submit(_identify_one, path, known, hash_timeout_s))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _identify_one(path: str, known: dict[tuple[str, int, int], str], timeout_s: float) -> Source | Unusable:
    try:
        size, mtime_ns = _regular_file(path)
        source_id = known.get((path, size, mtime_ns)) or content_id(path, size, timeout_s)
    except _Unusable as problem:
        return Unusable(path, problem.reason, problem.detail)
    return Source(path, source_id, size, mtime_ns)


def content_id(path: str, size: int, timeout_s: float = HASH_TIMEOUT_S) -> str:
    """A file's id: SHA-256 of its size and its first and last MiB, as 16 hex digits. Reading 2 MiB
    instead of the whole file keeps identification cheap at corpus scale (the probe records the full
    SHA-256 in the workers); two encodings of one video differ in both ends, so they keep apart."""
    digest = hashlib.sha256(str(size).encode())
    deadline = time.monotonic() + timeout_s
    try:
        with open_url(path) as handle:
            digest.update(handle.read(_END_BYTES))
            if size > 2 * _END_BYTES:
                handle.seek(size - _END_BYTES)
            digest.update(handle.read(_END_BYTES))
    except OSError as err:
        raise _Unusable("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    if time.monotonic() > deadline:
        raise _Unusable("hash_timeout", f"reading took over {timeout_s:.0f} s")
    return digest.hexdigest()[:ID_HEX_DIGITS]


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _regular_file(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a file or object, or why it cannot be a source; never opens it (a FIFO
    would block)."""
    try:
        kind, size, mtime_ns = file_info(path)
    except FileNotFoundError:
        kind = "broken_link" if not is_url(path) and os.path.islink(path) else "missing"
        raise _Unusable(kind, "the link points to nothing" if kind == "broken_link" else "no such file") from None
    except OSError as err:  # a link loop, a permission on a parent folder
        raise _Unusable("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    if kind != "file":
        what = "a folder" if kind == "directory" else "a FIFO, socket or device"
        raise _Unusable("not_a_regular_file", f"{what}, not a video file")
    return size, mtime_ns


def file_sha256(path: str, timeout_s: float = HASH_TIMEOUT_S, chunk_bytes: int = 1 << 20) -> str:
    """The whole file's SHA-256 (the probe records it, in the workers); a read still going after
    `timeout_s` (a hung network mount) raises TimeoutError."""
    digest = hashlib.sha256()
    deadline = time.monotonic() + timeout_s
    with open_url(path) as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading took over {timeout_s:.0f} s")
    return digest.hexdigest()
