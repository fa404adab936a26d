"""Who writes an output: one run at a time holds its lease, `lease.json` (run id, host, pid and a
heartbeat time). A second run is refused with the holder named; a holder that is gone (its process
dead on this host, or no heartbeat for `timeout_s` from another host) is taken over, so a run killed
with -9 never locks its output. The run's own write tasks work under its lease (curation/commit.py
keeps their names apart)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time

from curation.storage import Storage

LEASE = "lease.json"


class LeaseHeld(RuntimeError):
    """Another live run writes this output."""


class Lease:
    def __init__(self, storage: Storage, run_id: str, timeout_s: float = 120.0, heartbeat_s: float = 15.0):
        self.storage, self.run_id = storage, run_id
        self.timeout_s, self.heartbeat_s = timeout_s, heartbeat_s
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # another taker may win the race for a stale lease: look again
            if self.storage.write_atomic(LEASE, self._record(), exclusive=True):
                self._beating = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
                self._beating.start()
                return
            holder = self._holder()
            if holder is not None and not self._gone(holder):
                age = time.time() - holder["heartbeat"]
                raise LeaseHeld(f"{self.storage.root} is being written by run {holder['run_id']} (host "
                                f"{holder['host']}, pid {holder['pid']}, heartbeat {age:.0f} s ago): wait for it "
                                f"to end, or use another --output")
            if holder == self._holder():  # still the same dead holder: take it over
                self.storage.delete(LEASE)
        raise LeaseHeld(f"{self.storage.root}: could not take the lease; another run keeps taking it")

    def release(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join()
            self._beating = None
            holder = self._holder()
            if holder is not None and holder["run_id"] == self.run_id:
                self.storage.delete(LEASE)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = self._holder()
            if holder is None or holder["run_id"] != self.run_id:
                return  # taken over (we were presumed dead): the new holder's commits decide
            self.storage.write_atomic(LEASE, self._record())

    def _record(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "heartbeat": time.time()}).encode()

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.storage.read_bytes(LEASE))
        except FileNotFoundError:
            return None
        except ValueError:  # damaged: nobody can be holding it
            return {"run_id": "?", "host": "?", "pid": -1, "heartbeat": 0.0}

    def _gone(self, holder: dict) -> bool:
        if time.time() - holder["heartbeat"] > self.timeout_s:
            return True
        if holder["host"] != socket.gethostname():
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            return False
        return False
