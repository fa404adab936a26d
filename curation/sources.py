"""Inputs: a folder, a text file of paths, or a Parquet/CSV manifest; each source gets a content id."""
from __future__ import annotations

import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG

import pyarrow.parquet as pq

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts",
                    ".wmv", ".3gp", ".mts"}
ID_HEX_DIGITS = 16
HASH_TIMEOUT_S = 600.0  # a multi-GB file on a slow disk takes minutes; a hung mount never ends


@dataclass(frozen=True)
class Source:
    path: str
    source_id: str
    sha256: str
    size_bytes: int
    mtime_ns: int


def list_inputs(spec: str | Path) -> list[str]:
    """Absolute paths named by `spec`: a folder (searched recursively for video names), one video
    file, a text file with one path per line, or a .parquet/.csv manifest with a `path` column.
    Relative paths in a list resolve against the list's folder. Whatever a name points to (a
    folder called x.mp4, a FIFO, a broken or looping link) is listed here and judged by `identify`."""
    spec = Path(spec)
    if spec.is_dir():
        return sorted(str(p.absolute()) for p in spec.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not spec.is_file():
        raise FileNotFoundError(f"--input {spec}: no such file or folder")
    if spec.suffix.lower() in VIDEO_EXTENSIONS:
        return [str(spec.resolve())]
    if spec.suffix.lower() == ".parquet":
        table = pq.read_table(spec)
        if "path" not in table.column_names:
            raise ValueError(f"--input {spec}: the manifest has no 'path' column ({table.column_names})")
        paths = [p for p in table.column("path").to_pylist() if p]
    elif spec.suffix.lower() == ".csv":
        with spec.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise ValueError(f"--input {spec}: the manifest has no 'path' column ({reader.fieldnames})")
            paths = [row["path"] for row in reader if row["path"]]
    else:
        try:
            text = spec.read_text()
        except UnicodeDecodeError:  # not a list: a video with a name we do not know, taken as one input
            return [str(spec.resolve())]
        paths = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [str(Path(os.path.normpath(spec.parent.absolute() / p))) for p in paths]


def identify(paths: list[str], known: dict[tuple[str, int, int], str] | None = None,
             hash_timeout_s: float = HASH_TIMEOUT_S) -> tuple[list[Source], list[dict], list[tuple[str, str]]]:
    """Hash each regular file (or reuse the hash recorded for the same path, size and mtime).

    Returns the unique sources in input order, the inputs that cannot be sources ({path, reason,
    detail}: missing, not a regular file, unreadable, too slow to read), and (path, source_id) pairs
    of files whose content duplicates an earlier one. Nothing here can block or stop the run.
    """
    known = known or {}
    sources: list[Source] = []
    unusable: list[dict] = []
    duplicates: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in paths:
        try:
            stat = _regular_file(path)
            digest = known.get((path, stat.st_size, stat.st_mtime_ns)) or file_sha256(path, hash_timeout_s)
        except _Unusable as problem:
            unusable.append({"path": path, "reason": problem.reason, "detail": problem.detail})
            continue
        source = Source(path, digest[:ID_HEX_DIGITS], digest, stat.st_size, stat.st_mtime_ns)
        if source.source_id in seen:
            duplicates.append((path, source.source_id))
            continue
        seen.add(source.source_id)
        sources.append(source)
    return sources, unusable, duplicates


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _regular_file(path: str) -> os.stat_result:
    """The file's stat, or why it cannot be a source; never opens it (a FIFO would block)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        kind = "broken_link" if os.path.islink(path) else "missing"
        raise _Unusable(kind, "the link points to nothing" if kind == "broken_link" else "no such file") from None
    except OSError as err:  # a link loop, a permission on a parent folder
        raise _Unusable("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    if not S_ISREG(stat.st_mode):
        kind = "a folder" if S_ISDIR(stat.st_mode) else "a FIFO, socket or device"
        raise _Unusable("not_a_regular_file", f"{kind}, not a video file")
    return stat


def file_sha256(path: str, timeout_s: float = HASH_TIMEOUT_S, chunk_bytes: int = 1 << 20) -> str:
    """The file's SHA-256; a read that is still going after `timeout_s` (a hung network mount) gives up."""
    digest = hashlib.sha256()
    deadline = time.monotonic() + timeout_s
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                digest.update(chunk)
                if time.monotonic() > deadline:
                    raise _Unusable("hash_timeout", f"reading took over {timeout_s:.0f} s")
    except OSError as err:
        raise _Unusable("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    return digest.hexdigest()
