"""Inputs: a folder, a text file of paths, or a Parquet/CSV manifest; each source gets a content id."""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts",
                    ".wmv", ".3gp", ".mts"}
ID_HEX_DIGITS = 16


@dataclass(frozen=True)
class Source:
    path: str
    source_id: str
    sha256: str
    size_bytes: int
    mtime_ns: int


def list_inputs(spec: str | Path) -> list[str]:
    """Absolute paths named by `spec`: a folder (searched recursively for video files), a text file
    with one path per line, or a .parquet/.csv manifest with a `path` column. Relative paths in a
    list resolve against the list's folder."""
    spec = Path(spec)
    if spec.is_dir():
        return sorted(str(p.resolve()) for p in spec.rglob("*")
                      if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not spec.is_file():
        raise FileNotFoundError(f"--input {spec}: no such file or folder")
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
        paths = [line.strip() for line in spec.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    return [str((spec.parent / p).resolve()) for p in paths]


def identify(paths: list[str], known: dict[tuple[str, int, int], str] | None = None
             ) -> tuple[list[Source], list[str], list[tuple[str, str]]]:
    """Hash each file (or reuse the hash recorded for the same path, size and mtime).

    Returns the unique sources in input order, the missing paths, and (path, source_id) pairs of
    files whose content duplicates an earlier one.
    """
    known = known or {}
    sources: list[Source] = []
    missing: list[str] = []
    duplicates: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        digest = known.get((path, stat.st_size, stat.st_mtime_ns)) or file_sha256(path)
        source = Source(path, digest[:ID_HEX_DIGITS], digest, stat.st_size, stat.st_mtime_ns)
        if source.source_id in seen:
            duplicates.append((path, source.source_id))
            continue
        seen.add(source.source_id)
        sources.append(source)
    return sources, missing, duplicates


def file_sha256(path: str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
