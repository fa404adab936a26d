"""curation/storage.py against a local folder and a real S3-compatible server (moto, on 127.0.0.1)."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import threading

import pytest

from curation.storage import Storage, is_url, open_url


SMALL_BLOCK = 5 * 2**20  # S3's smallest multipart part: a bigger write starts a multipart upload


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "corpus"))
    s3 = request.getfixturevalue("s3_server")
    return Storage(s3.fresh_url("storage"), {"default_block_size": SMALL_BLOCK})


def other_writer(store: Storage) -> Storage:
    """The same folder seen by another process: a filesystem instance of its own (own caches)."""
    if store.is_local:
        return Storage(store.root)
    return Storage(store.root, {"skip_instance_cache": True})


def pending_uploads(store: Storage) -> list:
    bucket = store.root.removeprefix("s3://").split("/", 1)[0]
    return [u for u in store.fs.list_multipart_uploads(bucket)
            if u["Key"].startswith(store._path.split("/", 1)[1])]


def leftovers(store: Storage, rel_dir: str) -> list[str]:
    """Every entry in rel_dir, hidden temporaries included (local), or every pending upload (s3)."""
    if store.is_local:
        folder = store.url(rel_dir)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return pending_uploads(store)


def test_is_url():
    assert is_url("s3://bucket/x") and is_url("file:///tmp/x") and is_url("gs://b")
    assert not is_url("/tmp/x") and not is_url("relative/dir") and not is_url("C:\\x")


def test_url_child_and_root(store):
    assert not store.root.endswith("/")
    assert Storage(store.root + "/").root == store.root
    assert store.url("") == store.root
    assert store.url("a/b.tar") == store.root + "/a/b.tar"
    sub = store.child("shards")
    assert sub.root == store.url("shards") and sub.is_local == store.is_local
    assert sub.write_atomic("x.tar", b"abc")
    assert store.read_bytes("shards/x.tar") == b"abc"
    assert store.list("shards") == ["x.tar"]
    assert sub.child("deeper").url("y") == store.url("shards/deeper/y")


def test_write_read_exists_size(store):
    assert not store.exists("a/x.bin") and store.size("a/x.bin") is None
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/x.bin")
    assert store.write_atomic("a/x.bin", b"hello") is True
    assert store.exists("a/x.bin") and store.size("a/x.bin") == 5
    assert store.read_bytes("a/x.bin") == b"hello"
    with store.open_read("a/x.bin") as f:
        f.seek(1)
        assert f.read() == b"ello"
    assert store.write_atomic("a/x.bin", b"replaced") is True  # not exclusive: replaces
    assert store.read_bytes("a/x.bin") == b"replaced"
    assert store.write_atomic("a/empty", b"") and store.size("a/empty") == 0
    assert leftovers(store, "a") == ([] if not store.is_local else ["empty", "x.bin"])


def test_exclusive_write_never_replaces(store):
    assert store.write_atomic("claim.json", b"first", exclusive=True) is True
    assert store.write_atomic("claim.json", b"second", exclusive=True) is False
    assert store.read_bytes("claim.json") == b"first"
    assert other_writer(store).write_atomic("claim.json", b"third", exclusive=True) is False
    assert store.read_bytes("claim.json") == b"first"


def test_exclusive_write_race_has_one_winner(tmp_path):
    # local only: moto checks If-None-Match and then stores, without a lock, so two concurrent PUTs
    # may both win there (S3 itself decides atomically); the sequential refusal is tested above
    store, results, start = Storage(str(tmp_path / "corpus")), [], threading.Barrier(6)

    def claim(i):
        writer = other_writer(store)
        start.wait()
        results.append((writer.write_atomic("lease", f"writer {i}".encode(), exclusive=True), i))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for ok, i in results if ok]
    assert len(winners) == 1 and len(results) == 6
    assert store.read_bytes("lease") == f"writer {winners[0]}".encode()
    assert store.list("") == ["lease"]  # no temporaries left behind


def test_open_write_atomic_visible_only_when_complete(store):
    payload = os.urandom(SMALL_BLOCK + 12345)  # big enough for s3 to upload a part before closing
    with store.open_write_atomic("shards/000.tar") as f:
        f.write(payload[:SMALL_BLOCK])
        f.write(payload[SMALL_BLOCK:])
        f.flush()
        assert not store.exists("shards/000.tar") and store.list("shards") == []
        if not store.is_local:
            assert len(pending_uploads(store)) == 1  # the multipart upload is under way
    assert store.read_bytes("shards/000.tar") == payload
    assert store.list("shards") == ["000.tar"] and leftovers(store, "shards") == (
        ["000.tar"] if store.is_local else [])


def test_open_write_atomic_exception_leaves_nothing(store):
    with pytest.raises(RuntimeError, match="worker died"):
        with store.open_write_atomic("shards/001.tar") as f:
            f.write(os.urandom(SMALL_BLOCK + 1))
            f.flush()
            raise RuntimeError("worker died")
    assert not store.exists("shards/001.tar") and store.size("shards/001.tar") is None
    assert leftovers(store, "shards") == []  # no local temporary, no pending multipart upload
    # a small write (a single PUT on s3, nothing sent yet) fails the same way
    with pytest.raises(RuntimeError):
        with store.open_write_atomic("shards/002.tar") as f:
            f.write(b"partial")
            raise RuntimeError
    assert store.list("shards") == [] and leftovers(store, "shards") == []


def test_open_write_atomic_failure_keeps_the_old_object(store):
    store.write_atomic("index.parquet", b"old")
    with pytest.raises(ValueError):
        with store.open_write_atomic("index.parquet") as f:
            f.write(b"new but unfinished")
            raise ValueError
    assert store.read_bytes("index.parquet") == b"old"
    with store.open_write_atomic("index.parquet") as f:
        f.write(b"new")
    assert store.read_bytes("index.parquet") == b"new"


def test_list_with_suffix(store):
    assert store.list("parts") == [] and store.list("parts", ".parquet") == []
    for name in ["b.parquet", "a.parquet", "c.tar", "sub/d.parquet"]:
        store.write_atomic(f"parts/{name}", b"x")
    assert store.list("parts", ".parquet") == ["a.parquet", "b.parquet"]
    assert store.list("parts") == ["a.parquet", "b.parquet", "c.tar", "sub"]
    assert store.list("parts/sub") == ["d.parquet"]
    assert store.list("parts/a.parquet") == []  # a file is no folder


def test_sees_writes_of_another_process(store):
    """list/exists/size never answer from a stale cache (s3fs caches listings unless told not to)."""
    store.write_atomic("d/w", b"")
    assert store.list("d") == ["w"] and not store.exists("d/x")  # s3fs would now cache d's listing
    other = other_writer(store)
    other.write_atomic("d/x", b"12")
    # exists/size before list: list() refreshes the listing, which would hide a stale cache
    assert store.exists("d/x") and store.size("d/x") == 2 and store.list("d") == ["w", "x"]
    other.delete("d/x")
    assert not store.exists("d/x") and store.size("d/x") is None and store.list("d") == ["w"]


def test_move(store):
    store.write_atomic("shards/007.tar", b"bad shard")
    store.move("shards/007.tar", "quarantine/007.tar")
    assert not store.exists("shards/007.tar")
    assert store.read_bytes("quarantine/007.tar") == b"bad shard"
    assert store.list("quarantine") == ["007.tar"]
    with pytest.raises(FileNotFoundError):
        store.move("shards/absent.tar", "quarantine/absent.tar")


def test_delete_and_makedirs(store):
    store.delete("never/was")  # absent: no error
    store.write_atomic("tmp/x", b"1")
    store.delete("tmp/x")
    assert not store.exists("tmp/x") and store.list("tmp") == []
    store.makedirs("new/folder")
    assert store.list("new/folder") == []
    assert os.path.isdir(store.url("new/folder")) == store.is_local
    assert store.write_atomic("new/folder/f", b"ok") and store.list("new/folder") == ["f"]


def test_pickles_for_workers(store):
    store.write_atomic("p", b"pickled")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.root == store.root and copy.is_local == store.is_local
    assert copy.read_bytes("p") == b"pickled"


def test_file_url_root_is_local(tmp_path):
    store = Storage(f"file://{tmp_path}/c")
    assert store.is_local and store.url("x") == f"file://{tmp_path}/c/x"
    assert store.write_atomic("x", b"1", exclusive=True) and not store.write_atomic("x", b"2", exclusive=True)
    assert (tmp_path / "c" / "x").read_bytes() == b"1"


def test_storage_options_override_the_environment(s3_server, monkeypatch):  # noqa: F811
    root = s3_server.fresh_url("options")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    options = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}
    assert Storage(root, options).write_atomic("x", b"via options")
    with open_url(root + "/x", storage_options=options) as f:
        assert f.read() == b"via options"


def test_open_url(tmp_path, s3_server):  # noqa: F811
    (tmp_path / "in.bin").write_bytes(b"local input")
    with open_url(str(tmp_path / "in.bin")) as f:
        assert f.read() == b"local input"
    with open_url(f"file://{tmp_path}/in.bin") as f:
        assert f.read() == b"local input"
    root = s3_server.fresh_url("inputs")
    Storage(root).write_atomic("in.bin", b"remote input")
    with open_url(root + "/in.bin") as f:
        f.seek(7)
        assert f.read() == b"input"
    with pytest.raises(FileNotFoundError):
        open_url(root + "/absent.bin").read()


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("video") / "testsrc.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", str(out)], check=True, timeout=60)
    return out


def test_pyav_reads_video_from_s3(s3_server, tiny_video):  # noqa: F811
    import av

    root = s3_server.fresh_url("videos")
    Storage(root).write_atomic("clip.mp4", tiny_video.read_bytes())
    # a plain mp4 has its moov atom at the end: this also checks that the stream seeks
    with open_url(root + "/clip.mp4") as f, av.open(f) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 48)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)


def _tiny_shard() -> bytes:
    import webdataset as wds

    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as writer:
        for i in range(3):
            writer.write({"__key__": f"clip{i:03d}", "txt": f"caption {i}", "json": {"i": i}})
    return buffer.getvalue()


def test_webdataset_reads_shard_from_s3(s3_server, monkeypatch):  # noqa: F811
    import webdataset as wds

    root = s3_server.fresh_url("shards")
    for n in range(2):
        Storage(root).write_atomic(f"shard-{n:06d}.tar", _tiny_shard())
    # 1. webdataset opens URLs through its gopen table, which has no s3 entry: one line adds it
    monkeypatch.setitem(wds.gopen_schemes, "s3", lambda url, mode="rb", bufsize=8192, **kw: open_url(url, mode))
    samples = list(wds.WebDataset(root + "/shard-{000000..000001}.tar", shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == ["clip000", "clip001", "clip002"] * 2
    assert samples[1]["txt"] == b"caption 1"
    # 2. or hand webdataset's tar expander an opened stream
    with open_url(root + "/shard-000000.tar") as f:
        streamed = list(wds.tariterators.group_by_keys(
            wds.tariterators.tar_file_expander([{"url": "s", "stream": f}])))
    assert [s["__key__"] for s in streamed] == ["clip000", "clip001", "clip002"]
