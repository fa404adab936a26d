"""A real S3-compatible server for tests: moto's server on 127.0.0.1, in a thread of the test process.

Being a thread, it cannot outlive the tests: it stops at the end of the session, and dies with the
process if that is killed. The session's environment points botocore (and so s3fs) at it, and at
nothing else: explicit dummy credentials and region, no instance metadata lookups, no proxy.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pytest

BUCKET = "curation-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    def url(self, prefix: str = "") -> str:
        """s3://bucket/prefix on this server (s3://bucket when prefix is empty)."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def fresh_url(self, name: str = "t") -> str:
        """A prefix no other test uses: tests share one bucket."""
        return self.url(f"{name}-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",  # a developer's ~/.aws must not redirect the tests
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        # fsspec reuses filesystem instances by their arguments, not by the environment: drop any
        # made before the endpoint was set (and, at the end, those pointing at this server)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            # exist_ok: moto keeps its buckets per process, so a second server here shares them
            s3fs.S3FileSystem().makedirs(BUCKET, exist_ok=True)
            yield S3Server(endpoint=endpoint, bucket=BUCKET)
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()
