"""Where a corpus lives: a local folder or an object-store prefix (s3://bucket/prefix), behind one small API.

Every write is atomic (a reader sees a complete object or none) and can be exclusive (never replaces
an existing object), because resuming and concurrent writers depend on both:
- local: write a hidden temporary file in the same folder, fsync, then os.replace (or os.link for an
  exclusive write, which fails when the target exists), then fsync the folder;
- object store: one PUT, or a multipart upload that becomes visible only when completed; an exclusive
  write sends `If-None-Match: *`, which S3 (since August 2024) and moto refuse with 412 when the key exists.

Object stores go through fsspec (s3fs for s3://). Endpoint and credentials come from the usual
environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, which
botocore reads itself) or from storage_options, which are passed to the fsspec filesystem.
"""
from __future__ import annotations

import contextlib
import os
import re
import uuid
from stat import S_ISDIR, S_ISREG
from typing import IO, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TMP_MARK = ".tmp-"  # hidden temporaries are ".<name>.tmp-<hex>"; list() never shows them


def is_url(path: str) -> bool:
    """True for 'scheme://...' (s3://, file://, http://, ...), False for a plain local path."""
    return bool(_URL.match(str(path)))


def _options(storage_options: dict | None) -> dict:
    # No listings cache: another process (a worker, a resumed run) may have written since we last
    # looked, and exists()/list() must see it. Callers may still turn it back on.
    return {"use_listings_cache": False, **(storage_options or {})}


def open_url(url: str, mode: str = "rb", storage_options: dict | None = None) -> IO[bytes]:
    """Open an input (a source video, a trainer's shard) given as a local path or any fsspec URL.

    The result is a seekable binary file object and a context manager, so av.open() and tarfile can
    read it directly."""
    if not is_url(url):
        return open(url, mode)
    fs, path = fsspec.core.url_to_fs(url, **_options(storage_options))
    return fs.open(path, mode)


def media_url(path: str, expires_s: int = 24 * 3600) -> str:
    """Where ffmpeg and PyAV can read a source: a local path as it is; an object as a pre-signed
    HTTP(S) URL (they read it with range requests, so an mp4 whose index is at its end still opens)."""
    if not is_url(path):
        return path
    fs, key = fsspec.core.url_to_fs(path, **_options(None))
    return fs.sign(key, expiration=expires_s)


def file_info(path: str) -> tuple[str, int, int]:
    """(type, size in bytes, modification time in ns) of a local path or an object ("file" or
    "directory"; an object store's time is its last-modified time)."""
    if not is_url(path):
        stat = os.stat(path)
        return ("file" if S_ISREG(stat.st_mode) else "directory" if S_ISDIR(stat.st_mode) else "other",
                stat.st_size, stat.st_mtime_ns)
    fs, key = fsspec.core.url_to_fs(path, **_options(None))
    info = fs.info(key)
    modified = info.get("LastModified") or info.get("mtime") or 0
    seconds = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
    return info["type"], int(info.get("size") or 0), int(seconds * 1e9)


def list_url(url: str, suffixes: set[str]) -> list[str]:
    """Every object under the prefix `url` whose name ends with one of `suffixes`, as URLs, sorted."""
    fs, key = fsspec.core.url_to_fs(url, **_options(None))
    return sorted(fs.unstrip_protocol(found) for found in fs.find(key)
                  if os.path.splitext(found)[1].lower() in suffixes)


class Storage:
    """One folder of a corpus (local path or fsspec URL such as s3://bucket/prefix): every read and write of the output goes through it."""

    def __init__(self, root: str, storage_options: dict | None = None):
        root = str(root)
        self.root = root.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        if is_url(self.root):
            self.fs, self._path = fsspec.core.url_to_fs(self.root, **_options(self.storage_options))
        else:
            self.fs, self._path = LocalFileSystem(), self.root
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __reduce__(self):
        # Ray ships a Storage to workers: rebuild it there rather than pickling a live client.
        return (Storage, (self.root, self.storage_options))

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def _join(self, base: str, rel: str) -> str:
        rel = rel.strip("/")
        if not rel:
            return base
        return base + rel if base.endswith("/") else f"{base}/{rel}"

    def url(self, rel: str) -> str:
        """Full path (local) or URL (object store) of rel under the root."""
        return self._join(self.root, rel)

    def _p(self, rel: str) -> str:
        # the path the filesystem itself understands (no file:// prefix; bucket/key for s3)
        return self._join(self._path, rel)

    def child(self, rel: str) -> "Storage":
        return Storage(self.url(rel), self.storage_options)

    # ---- reading

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self._p(rel))
        return self.fs.exists(self._p(rel))

    def size(self, rel: str) -> int | None:
        """Size in bytes, None when absent."""
        try:
            if self.is_local:
                return os.stat(self._p(rel)).st_size
            return int(self.fs.info(self._p(rel))["size"])
        except FileNotFoundError:
            return None

    def list(self, rel_dir: str, suffix: str = "") -> list[str]:
        """Names (not paths) directly in rel_dir that end with suffix, sorted; [] when rel_dir is absent.

        Subfolders (common prefixes on an object store) count as names too; temporaries of
        unfinished local writes never do."""
        try:
            if self.is_local:
                names = os.listdir(self._p(rel_dir))
            else:
                folder = self._p(rel_dir).rstrip("/")
                entries = [e.rstrip("/") for e in self.fs.ls(folder, detail=False, refresh=True)]
                # ls of a key lists the key itself: a file is no folder, as locally
                names = [e.rsplit("/", 1)[-1] for e in entries if e != folder]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in set(names)
                      if n.endswith(suffix) and not (n.startswith(".") and _TMP_MARK in n))

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            with open(self._p(rel), "rb") as f:
                return f.read()
        return self.fs.cat_file(self._p(rel))

    def open_read(self, rel: str) -> IO[bytes]:
        if self.is_local:
            return open(self._p(rel), "rb")
        return self.fs.open(self._p(rel), "rb")

    # ---- writing

    def _temporary(self, path: str) -> str:
        folder, name = os.path.split(path)
        return os.path.join(folder, f".{name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")

    def write_atomic(self, rel: str, data: bytes, exclusive: bool = False) -> bool:
        """Write data so that it is visible only once complete. With exclusive, an existing object is
        never replaced and False is returned instead. True when written."""
        path = self._p(rel)
        if not self.is_local:
            try:
                # s3fs sends If-None-Match: * for mode="create" (on the PUT, or on completing the
                # multipart upload of a large body)
                self.fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
            except FileExistsError:
                return False
            return True
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = self._temporary(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)  # atomic, and fails when path exists (unlike rename)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        _fsync_folder(os.path.dirname(path))
        return True

    @contextlib.contextmanager
    def open_write_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        """Yield a binary file; on normal exit its content appears complete under rel, on an exception
        nothing appears (the local temporary is removed, the multipart upload is aborted)."""
        path = self._p(rel)
        if not self.is_local:
            f = self.fs.open(path, "wb")
            try:
                yield f
                f.close()  # one PUT, or completes the multipart upload: the object appears now
            except BaseException:
                # fsspec's own __exit__ would commit what was written so far: discard instead, and
                # mark the file closed so that its __del__ does not commit an empty object
                f.discard()
                f.closed = True
                raise
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = self._temporary(path)
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        _fsync_folder(os.path.dirname(path))

    def move(self, rel_src: str, rel_dst: str) -> None:
        """Rename locally; copy then delete on an object store, so never use it to publish."""
        src, dst = self._p(rel_src), self._p(rel_dst)
        if self.is_local:
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    def delete(self, rel: str) -> None:
        """Delete one file/object; no error when it is absent."""
        with contextlib.suppress(FileNotFoundError):
            if self.is_local:
                os.remove(self._p(rel))
            else:
                self.fs.rm_file(self._p(rel))

    def makedirs(self, rel: str) -> None:
        """Create a local folder; a no-op on object stores, which have no folders."""
        if self.is_local:
            os.makedirs(self._p(rel), exist_ok=True)


def _fsync_folder(folder: str) -> None:
    # makes the rename itself durable; some filesystems refuse to open or fsync a folder
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
