"""The commit protocol: many writers, one corpus, any of them killed at any instant
(docs/commit-protocol.md has the invariants and why each step is there).

A writer is one write task of one run, named `<run_id>-<task>` (the task names its chunk of sources
and its index within it); its n-th commit is `<writer>-<n>`.
One commit publishes, in this order:

1. the shard `shards/<commit>-<attempt>.tar` (none for a rows-only commit), complete under its name;
2. its index rows `index/parts/<commit>-<attempt>.clips.parquet` and `.sources.parquet`;
3. the marker `index/commits/<commit>.json`, created exclusively. The marker is the commit: it names
   the files above with their sizes, and each sample's member hashes. A retried task writes the same
   commit names (its input is the same), so a second marker for a name is refused and that attempt's
   files are discarded: one commit wins.

Nothing is visible to a reader of the index until its marker exists. `recover` (at the start of every
run, holding the output's lease) and `verify` check every marker against the files it names;
whatever does not match, and whatever no marker names, is moved to `quarantine/`, never deleted,
and the sources it held are processed again.
"""
from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from curation.storage import Storage

SHARDS, PARTS, COMMITS, QUARANTINE = "shards", "index/parts", "index/commits", "quarantine"
TAR_MTIME = 0  # fixed member times: the same samples give the same shard bytes


@dataclass
class Commit:
    """What one marker says was published."""

    name: str
    run_id: str
    shard: str | None  # path under the corpus root
    shard_bytes: int
    members: dict[str, dict[str, str]]  # key -> member -> sha256
    files: dict[str, int]  # index part paths -> bytes

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        return cls(**json.loads(data))

    def paths(self) -> list[str]:
        return ([self.shard] if self.shard else []) + list(self.files)


class CommitWriter:
    """Publishes one writer's commits. `add_sample` streams a sample into the open shard; `commit`
    publishes the shard (if any) with the rows given, under the next commit name."""

    def __init__(self, storage: Storage, run_id: str, task: str, max_samples: int, max_bytes: int):
        self.storage, self.run_id, self.writer = storage, run_id, f"{run_id}-{task}"
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.attempt = secrets.token_hex(3)  # a retried task's files never replace its earlier attempt's
        self.sequence = 0
        self._shard: _OpenShard | None = None
        self.published: list[Commit] = []
        self.lost_races: list[str] = []

    @property
    def shard_name(self) -> str:
        return f"{SHARDS}/{self._commit_name()}-{self.attempt}.tar"

    @property
    def shard_full(self) -> bool:
        return self._shard is not None and (self._shard.samples >= self.max_samples
                                            or self._shard.bytes >= self.max_bytes)

    def add_sample(self, members: dict[str, Any]) -> str:
        """Write one sample into the open shard; returns the shard's name (its path under the root)."""
        if self._shard is None:
            self._shard = _OpenShard(self.storage, self.shard_name)
        self._shard.write(members)
        return self._shard.name

    def commit(self, clip_rows: list[dict], source_rows: list[dict]) -> Commit | None:
        """Publish the open shard (if any) and these rows; None when there was nothing to commit or
        another attempt already committed this name (its files stand, ours are removed)."""
        if self._shard is None and not clip_rows and not source_rows:
            return None
        name = self._commit_name()
        shard, self._shard = self._shard, None
        files = {}
        for kind, rows in (("clips", clip_rows), ("sources", source_rows)):
            path = f"{PARTS}/{name}-{self.attempt}.{kind}.parquet"
            data = parquet_bytes(rows)
            self.storage.write_atomic(path, data)
            files[path] = len(data)
        commit = Commit(name, self.run_id, shard.name if shard else None,
                        shard.close() if shard else 0, shard.hashes if shard else {}, files)
        self.sequence += 1
        if not self.storage.write_atomic(f"{COMMITS}/{name}.json", commit.to_json(), exclusive=True):
            for path in commit.paths():
                self.storage.delete(path)
            self.lost_races.append(name)
            return None
        self.published.append(commit)
        return commit

    def abandon(self) -> None:
        """Drop the open shard without publishing it (the task failed)."""
        if self._shard is not None:
            self._shard.abandon()
            self._shard = None

    def _commit_name(self) -> str:
        return f"{self.writer}-{self.sequence:03d}"


class _OpenShard:
    def __init__(self, storage: Storage, name: str):
        self.name = name
        self._context = storage.open_write_atomic(name)
        self._handle = self._context.__enter__()
        self._tar = wds.TarWriter(self._handle, mtime=TAR_MTIME, encoder=False)
        self.samples, self.bytes = 0, 0
        self.hashes: dict[str, dict[str, str]] = {}

    def write(self, members: dict[str, Any]) -> None:
        self.hashes[members["__key__"]] = {name: hashlib.sha256(data).hexdigest()
                                           for name, data in members.items() if name != "__key__"}
        self.bytes += self._tar.write(members)
        self.samples += 1

    def close(self) -> int:
        """Complete the tar and publish it under its name; returns its size in bytes."""
        self._tar.tarstream.close()  # the tar's end blocks, keeping the file open for the publish
        size = self._handle.tell()
        self._context.__exit__(None, None, None)
        return size

    def abandon(self) -> None:
        self._context.__exit__(RuntimeError, RuntimeError("abandoned"), None)


def parquet_bytes(rows: list[dict]) -> bytes:
    columns = list(dict.fromkeys(name for row in rows for name in row))  # rows differ in scores
    table = pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows]) if rows else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@dataclass
class Inspection:
    """What `recover` or `verify` found: the commits that stand, and what does not."""

    commits: list[Commit] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {path, reason, detail}
    orphans: list[str] = field(default_factory=list)  # published files no commit names
    clip_rows: dict[str, pa.Table] = field(default_factory=dict)  # commit name -> its clip rows, read once


def inspect(storage: Storage, deep: bool = False) -> Inspection:
    """Check every marker against the files it names (sizes; with `deep`, each sample's member
    hashes too), the first commit of a key against later ones, and find what no marker names."""
    found = Inspection()
    committed_keys: set[str] = set()
    for marker_name in storage.list(COMMITS, ".json"):
        marker = f"{COMMITS}/{marker_name}"
        checked = _check_marker(storage, marker, committed_keys, deep)
        if isinstance(checked, tuple):
            commit, rows = checked
            found.commits.append(commit)
            found.clip_rows[commit.name] = rows
            committed_keys.update(commit.members, _keys(rows))
        else:
            found.problems.append({"path": marker, **checked})
    named = {path for commit in found.commits for path in commit.paths()}
    for folder, suffix in ((SHARDS, ".tar"), (PARTS, ".parquet")):
        found.orphans += [f"{folder}/{name}" for name in storage.list(folder, suffix)
                          if f"{folder}/{name}" not in named]
    return found


def _check_marker(storage: Storage, marker: str, committed_keys: set[str],
                  deep: bool) -> tuple[Commit, pa.Table] | dict:
    """The commit and its clip rows, or the problem with it."""
    try:
        commit = Commit.from_json(storage.read_bytes(marker))
    except (ValueError, TypeError) as err:
        return {"reason": "unreadable_marker", "detail": f"{type(err).__name__}: {err}"}
    expected = dict(commit.files, **({commit.shard: commit.shard_bytes} if commit.shard else {}))
    for path, size in expected.items():
        actual = storage.size(path)
        if actual != size:
            state = "missing" if actual is None else f"{actual} bytes, committed {size}"
            return {"reason": "damaged_file", "detail": f"{path}: {state}", "commit": commit}
    rows = _clip_rows(storage, commit)
    twice = committed_keys & (set(commit.members) | set(_keys(rows)))
    if twice:
        return {"reason": "committed_twice", "detail": f"{len(twice)} key(s) an earlier commit holds, "
                                                       f"e.g. {sorted(twice)[0]}", "commit": commit}
    if deep and commit.shard:
        mismatch = _hash_mismatch(storage, commit)
        if mismatch:
            return {"reason": "damaged_file", "detail": f"{commit.shard}: {mismatch}", "commit": commit}
    return commit, rows


def _clip_rows(storage: Storage, commit: Commit) -> pa.Table:
    clips = next(path for path in commit.files if path.endswith(".clips.parquet"))
    return pq.read_table(io.BytesIO(storage.read_bytes(clips)))


def _keys(rows: pa.Table) -> list[str]:
    return rows.column("key").to_pylist() if "key" in rows.column_names else []


def _hash_mismatch(storage: Storage, commit: Commit) -> str | None:
    with storage.open_read(commit.shard) as handle:
        seen: dict[str, dict[str, str]] = {}
        for sample in _samples(handle):
            seen[sample["__key__"]] = {name: hashlib.sha256(data).hexdigest()
                                       for name, data in sample.items() if name != "__key__"}
    for key, hashes in commit.members.items():
        if seen.get(key) != hashes:
            return f"sample {key} differs from its commit"
    return None if set(seen) == set(commit.members) else "holds samples its commit does not name"


def _samples(handle):
    """Samples of a shard read as a stream: consecutive members sharing a key."""
    sample: dict[str, bytes] = {}
    with tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[extension] = tar.extractfile(member).read()
    if sample:
        yield sample


def quarantine(storage: Storage, found: Inspection, run_id: str) -> list[dict]:
    """Move every damaged commit's files, and every orphan, under quarantine/<run_id>/ (never
    deleted: a person may want them back). Returns what was moved and why."""
    standing = {path for commit in found.commits for path in commit.paths()}
    taken: set[str] = set()
    moved = []
    for problem in found.problems:
        commit = problem.get("commit")
        named = commit.paths() if commit else []  # a commit that lost a race names the winner's files too
        paths = [problem["path"]] + [p for p in named if p not in standing and storage.exists(p)]
        moved.append({"paths": paths, "reason": problem["reason"], "detail": problem["detail"]})
        taken.update(paths)
    for path in found.orphans:
        if path not in taken:
            moved.append({"paths": [path], "reason": "uncommitted", "detail": "no commit names it"})
            taken.add(path)
    for path in taken:
        storage.move(path, f"{QUARANTINE}/{run_id}/{path}")
    return moved
