"""A real multi-node Ray cluster on one machine: a head and N worker nodes, each its own
`ray start --block` process (own process group, own temp dir, own CPUs and custom resource),
for tests (`with RayCluster(workers=2) as cluster:`) and benches.

Every process a node starts (raylet, object store, agents, Ray workers) carries the environment
variable RAY_CLUSTER_HARNESS=<cluster id>:<node>, inherited from its `ray start`; killing and
stopping find processes by that tag in /proc/<pid>/environ, so a worker that outlives its
raylet (re-parented to init) is still found, and no process of anyone else is ever touched
(`ray stop` would kill every Ray process on the machine).

Network: every node advertises 127.0.0.1, but Ray 2.60's gRPC servers (GCS, raylets, object
managers, core workers) bind the wildcard address whatever --node-ip-address says, and no option
narrows that. So where the kernel allows it (`unshare -n`, network="netns", the default when it
works) the whole cluster and its drivers live in a private network namespace that has nothing but
loopback; elsewhere (network="host") they listen on every interface. Either way each connection
needs the cluster's own random token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), never ~/.ray/auth_token.
Drivers must be started through `cluster.popen(...)` (or `cluster.command(...)` with `cluster.env`).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
TAG = "RAY_CLUSTER_HARNESS"
# Ray system config for the GCS's node health checks (defaults: every 3 s, 10 s timeout, 5 misses).
# Kept loose enough that a raylet starved of CPU on a loaded 2-core machine is not declared dead.
FAST_FAILURE_DETECTION = {"RAY_health_check_initial_delay_ms": "2000", "RAY_health_check_period_ms": "1000",
                          "RAY_health_check_timeout_ms": "3000", "RAY_health_check_failure_threshold": "5"}

_NODES_PROBE = r"""
import json, sys, time, ray
ray.init(address=sys.argv[1], include_dashboard=False, logging_level="ERROR", log_to_driver=False)
want, deadline = json.loads(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    alive = sorted(k for n in ray.nodes() if n["Alive"] for k in n["Resources"] if k.startswith("node_"))
    if alive == want or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({"alive": alive, "nodes": [{"alive": n["Alive"], "ip": n["NodeManagerAddress"],
                  "resources": n["Resources"]} for n in ray.nodes()]}))
"""


def free_port(taken: set[int] | None = None) -> int:
    """A port below the kernel's ephemeral range (where Ray's own port-0 listeners land), free on
    this host's loopback now and not in `taken` (which it joins)."""
    taken = taken if taken is not None else set()
    low, high = 20000, _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(low, high)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def netns_available() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "--", "ip", "link", "set", "lo", "up"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Runs first in every process the harness starts, then execs the real command (same pid): asks the
# kernel for SIGTERM when the process that started it dies (a crashed pytest), which makes
# `ray start --block` stop its node. A shim, not preexec_fn: forking a threaded pytest (Ray's
# threads) must not run Python code before exec.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
                    "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


def _die_with_parent(argv: list[str]) -> list[str]:
    return [PYTHON, "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def _processes() -> dict[int, tuple[int, str | None, str | None]]:
    """pid -> (parent pid, harness tag or None, network namespace) of every live, non-zombie process."""
    found = {}
    needle = f"{TAG}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
            namespace = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:  # gone, or a kernel thread
            continue
        tag = next((v[len(needle):].decode() for v in environ.split(b"\0") if v.startswith(needle)), None)
        found[pid] = (int(fields[1]), tag, namespace)
    return found


def tagged_pids(prefix: str, exact: bool = False, namespace: str | None = None) -> dict[int, str]:
    """pid -> tag of the processes tagged RAY_CLUSTER_HARNESS=prefix* (=prefix if exact), of all their
    descendants (which take the nearest tagged ancestor's tag: Ray's setproctitle may overwrite what
    /proc/<pid>/environ shows, as it does for the dashboard and runtime-env agents), and, given a
    network namespace, of every process inside it (an agent orphaned by a killed raylet)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    tags: dict[int, str] = {}
    todo = [pid for pid, (_, tag, _) in processes.items() if tag]
    for pid in todo:  # breadth first, from every tagged process down
        tags.setdefault(pid, processes[pid][1] or tags.get(processes[pid][0], ""))
        todo.extend(child for child in children.get(pid, []) if child not in tags)
    if namespace is not None:
        for pid, (_, _, member_of) in processes.items():
            if member_of == namespace:
                tags.setdefault(pid, f"{prefix}(namespace member)")
    return {pid: tag for pid, tag in tags.items()
            if tag == prefix or (not exact and tag.startswith(prefix))}


def kill_tagged(prefix: str, sig: int = signal.SIGKILL, timeout_s: float = 15.0, exact: bool = False,
                namespace: str | None = None) -> list[int]:
    """Signal every process tagged_pids() finds until none is left (a raylet may fork a worker between
    two scans). Returns the pids signalled."""
    signalled: set[int] = set()
    deadline = time.time() + timeout_s
    while True:
        alive = list(tagged_pids(prefix, exact, namespace))
        if not alive:
            return sorted(signalled)
        if time.time() > deadline:
            raise RuntimeError(f"processes of {prefix!r} survive {sig!r}: {alive}")
        for pid in alive:
            try:
                os.kill(pid, sig)
                signalled.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _net_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class RayCluster:
    """head (0 CPUs by default: drivers attach to it, work goes to the worker nodes) + N worker nodes,
    worker i with `cpus_per_worker` CPUs and the custom resource {"node_w<i>": 1}."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, head_cpus: int = 0,
                 object_store_mb: int = 256, memory_gb_per_worker: float | None = 4.0,
                 network: str = "auto", root: str | Path | None = None, start_timeout_s: float = 120.0,
                 fast_failure_detection: bool = True):
        self.n_workers, self.cpus_per_worker, self.head_cpus = workers, cpus_per_worker, head_cpus
        self.object_store_bytes = object_store_mb * 2**20
        self.memory_bytes = int(memory_gb_per_worker * 2**30) if memory_gb_per_worker else None
        self.network = ("netns" if netns_available() else "host") if network == "auto" else network
        self.start_timeout_s = start_timeout_s
        self.id = f"rc{secrets.token_hex(4)}"
        # short: Ray's unix sockets live below it and a socket path must stay under 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.id}-", dir=root or "/tmp"))
        self._ports: set[int] = set()  # every fixed port of this cluster, all different
        self.port = free_port(self._ports)
        self.address = f"127.0.0.1:{self.port}"
        token = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", TAG))}
        self.env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ADDRESS": self.address,
                         "RAY_DISABLE_DOCKER_CPU_WARNING": "1", "RAY_USAGE_STATS_ENABLED": "0",
                         "PYTHONUNBUFFERED": "1"})
        if fast_failure_detection:  # the GCS marks a silent node dead after ~5 s instead of ~30 s
            self.env.update(FAST_FAILURE_DETECTION)
        self.nodes: dict[str, subprocess.Popen] = {}
        self._netns_holder: subprocess.Popen | None = None
        self.namespace: str | None = None  # "net:[inode]" of the cluster's network namespace
        self._logs: list = []

    # ---- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "RayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "RayCluster":
        try:
            if self.network == "netns":
                self._netns_holder = self._spawn(
                    "netns", ["unshare", "-n", "--", "sh", "-c", "ip link set lo up && exec sleep 86400"],
                    in_netns=False)
                self._wait_for(lambda: self._lo_up(), "the network namespace's loopback", 10)
                self.namespace = _net_namespace(self._netns_holder.pid)
            self._start_node("head")
            self._wait_for(lambda: self._gcs_up(), "the head's GCS", self.start_timeout_s)
            for i in range(1, self.n_workers + 1):
                self._start_node(f"w{i}")
            self.wait_for_nodes()
        except Exception as err:
            logs = "\n".join(self.log_tail(name) for name in ["netns", *self.nodes])
            self.stop()
            raise RuntimeError(f"the cluster did not start: {err}\n{logs}") from err
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, name: str) -> None:
        temp_dir = self.root / name
        temp_dir.mkdir(exist_ok=True)
        common = ["--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
                  "--object-store-memory", str(self.object_store_bytes), "--disable-usage-stats",
                  "--dashboard-agent-listen-port", str(free_port(self._ports)),
                  "--dashboard-agent-grpc-port", str(free_port(self._ports)),
                  "--metrics-export-port", str(free_port(self._ports)),
                  "--runtime-env-agent-port", str(free_port(self._ports)), "--log-style", "record"]
        if name == "head":
            argv = [RAY, "start", "--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus),
                    "--include-dashboard", "false", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(free_port(self._ports)), *common]
        else:
            argv = [RAY, "start", "--address", self.address, "--num-cpus", str(self.cpus_per_worker),
                    "--resources", json.dumps({f"node_{name}": 1}), "--include-log-monitor", "false", *common]
            if self.memory_bytes:
                argv += ["--memory", str(self.memory_bytes)]
        self.nodes[name] = self._spawn(name, argv)

    def _spawn(self, name: str, argv: list[str], in_netns: bool = True) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        self._logs.append(log)
        env = dict(self.env, **{TAG: f"{self.id}:{name}"})
        return subprocess.Popen(_die_with_parent(self.command(argv) if in_netns else argv), env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=self.root)

    def command(self, argv: list[str]) -> list[str]:
        """argv as run inside the cluster's network (a driver must reach the nodes)."""
        if self.network == "netns" and self._netns_holder is not None:
            return ["nsenter", f"--net=/proc/{self._netns_holder.pid}/ns/net", "--", *argv]
        return list(argv)

    def popen(self, argv: list[str], tag: str = "driver", **kwargs) -> subprocess.Popen:
        """Start a driver (e.g. `python -m curation.cli run ... --ray-address cluster.address`) inside
        the cluster's network, with its token, tagged so that stop() also ends it."""
        env = dict(self.env, **kwargs.pop("env", {}), **{TAG: f"{self.id}:{tag}"})
        kwargs.setdefault("cwd", REPO_ROOT)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(_die_with_parent(self.command(argv)), env=env, start_new_session=True, **kwargs)

    def run(self, argv: list[str], timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
        tag = f"run-{secrets.token_hex(3)}"
        process = self.popen(argv, tag=tag, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tagged(f"{self.id}:{tag}", exact=True)
            process.communicate()
            raise
        return subprocess.CompletedProcess(argv, process.returncode, out.decode(errors="replace"), None)

    def kill_worker(self, i: int, signal: int = signal.SIGKILL) -> list[int]:
        """Kill worker node i's whole process tree (its `ray start`, raylet with the object store,
        agents, Ray workers and actors) at once, as a machine that dies would; returns the pids."""
        pids = kill_tagged(f"{self.id}:w{i}", signal, exact=True)
        process = self.nodes.pop(f"w{i}", None)
        if process is not None:
            process.wait()
        return pids

    def restart_worker(self, i: int, wait: bool = True) -> None:
        """A replacement node with the same name and resources (an autoscaler's new machine)."""
        assert f"w{i}" not in self.nodes, f"worker node w{i} is running"
        shutil.rmtree(self.root / f"w{i}", ignore_errors=True)
        self._start_node(f"w{i}")
        if wait:
            self.wait_for_nodes()

    def ensure_workers(self) -> None:
        """Replace every worker node that was killed, so the cluster has all N again."""
        missing = [i for i in range(1, self.n_workers + 1) if f"w{i}" not in self.nodes]
        for i in missing:
            self.restart_worker(i, wait=False)
        if missing:
            self.wait_for_nodes()

    def add_worker(self, wait: bool = True) -> int:
        """One more worker node like the others; returns its number."""
        self.n_workers += 1
        self._start_node(f"w{self.n_workers}")
        if wait:
            self.wait_for_nodes()
        return self.n_workers

    def stop(self, graceful: bool = False) -> None:
        """Everything this cluster started, drivers included, by PID: SIGKILL to whatever carries
        the tag (graceful: SIGTERM to each `ray start` first, which stops its node, up to 10 s);
        then the temp dirs go. Never `ray stop`, which would end every Ray process on the machine."""
        if graceful:
            for process in self.nodes.values():
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.time() + 10
            while any(p.poll() is None for p in self.nodes.values()) and time.time() < deadline:
                time.sleep(0.1)
        kill_tagged(self.id + ":", namespace=self.namespace)
        for process in [*self.nodes.values(), *([self._netns_holder] if self._netns_holder else [])]:
            process.wait()
        self.nodes.clear()
        self._netns_holder = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> dict[int, str]:
        """Processes of this cluster still alive (none after stop())."""
        return tagged_pids(self.id + ":", namespace=self.namespace)

    def node_pids(self, name: str) -> dict[int, str]:
        """The processes of node `name` ("head", "w1", ...): its `ray start`, raylet, agents, workers."""
        return tagged_pids(f"{self.id}:{name}", exact=True)

    # ---- waiting ----------------------------------------------------------------------------------
    def expected_node_resources(self) -> list[str]:
        return sorted(f"node_{name}" for name in self.nodes if name.startswith("w"))

    def nodes_info(self, expect: list[str] | None = None, timeout_s: float = 0.0) -> dict:
        """What `ray.nodes()` says, from a short-lived driver inside the cluster's network; with
        `expect`, waits up to timeout_s until exactly those node_w* resources are alive."""
        try:
            result = self.run([PYTHON, "-c", _NODES_PROBE, self.address, json.dumps(expect or []), str(timeout_s)],
                              timeout=timeout_s + 60)
        except subprocess.TimeoutExpired as err:
            output = (err.output or b"").decode(errors="replace")[-3000:]
            raise RuntimeError(f"ray.nodes() probe hung for {timeout_s + 60:.0f} s:\n{output}\n"
                               + "\n".join(self.log_tail(n) for n in self.nodes)) from None
        if result.returncode != 0:
            raise RuntimeError(f"ray.nodes() probe failed:\n{result.stdout[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, timeout_s: float | None = None) -> dict:
        want = self.expected_node_resources()
        for name, process in self.nodes.items():
            if process.poll() is not None:
                raise RuntimeError(f"node {name} exited ({process.returncode}):\n{self.log_tail(name)}")
        info = self.nodes_info(want, timeout_s or self.start_timeout_s)
        if info["alive"] != want:
            raise RuntimeError(f"alive worker nodes {info['alive']}, expected {want}:\n"
                               + "\n".join(self.log_tail(n) for n in self.nodes))
        if self.namespace is not None:  # once up, every node's processes live in the cluster's namespace
            nodes = {f"{self.id}:{name}" for name in self.nodes}
            outside = {pid: tag for pid, tag in tagged_pids(self.id + ":").items()
                       if tag in nodes and _net_namespace(pid) not in (self.namespace, None)}
            if outside:
                raise RuntimeError(f"processes outside the cluster's network namespace: {outside}")
        return info

    def log_tail(self, name: str, chars: int = 2000) -> str:
        """The end of node `name`'s `ray start` output and of its raylet's and GCS's logs."""
        parts = []
        for path in [self.root / f"{name}.log",
                     *sorted((self.root / name).glob("session_*/logs/raylet.*")),
                     *sorted((self.root / name).glob("session_*/logs/gcs_server.*"))]:
            text = path.read_text(errors="replace")[-chars:] if path.exists() else "(none)"
            parts.append(f"--- {name}: {path.name} ---\n{text}")
        return "\n".join(parts)

    def _gcs_up(self) -> bool:
        head = self.nodes["head"]
        if head.poll() is not None:
            raise RuntimeError(f"the head exited ({head.returncode}):\n{self.log_tail('head')}")
        return b"Ray runtime started" in (self.root / "head.log").read_bytes()

    def _lo_up(self) -> bool:
        """The holder has made its own network namespace and brought its loopback up: it runs `sleep`
        (exec'd only after `ip link set lo up`) in a namespace other than ours. Before that,
        /proc/<pid>/ns/net is still this host's, and a node started then would land outside."""
        if self._netns_holder.poll() is not None:
            raise RuntimeError("could not make a network namespace (unshare -n)")
        pid = self._netns_holder.pid
        try:
            own_namespace = os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
            return own_namespace and Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    @staticmethod
    def _wait_for(ready, what: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while not ready():
            if time.time() > deadline:
                raise TimeoutError(f"{what} not up after {timeout_s:.0f} s")
            time.sleep(0.2)


if __name__ == "__main__":  # a smoke check: start, list the nodes, kill one, stop, nothing left
    started = time.time()
    with RayCluster(workers=2, network=sys.argv[1] if len(sys.argv) > 1 else "auto") as cluster:
        print(f"up in {time.time() - started:.1f} s at {cluster.address} ({cluster.network}); root {cluster.root}")
        print(json.dumps(cluster.nodes_info(), indent=1))
        print("killed w1:", cluster.kill_worker(1))
        print(cluster.nodes_info(["node_w2"], 60)["alive"])
        cid = cluster.id
    print("left behind:", tagged_pids(cid + ":"))


def cluster_inputs(folder: Path, realdata: Path, cuts: list[tuple[str, float, float]]) -> Path:
    """A list file of cuts (path under realdata, start s, length s) of real videos plus a generated
    two-shot video: the input of the cluster tests and bench."""
    videos = []
    for relative, start, length in cuts:
        target = folder / f"{Path(relative).stem}-{start}-{length}.mp4"
        _ffmpeg("-ss", str(start), "-t", str(length), "-i", str(realdata / relative), "-c:v", "libx264",
                "-preset", "ultrafast", "-crf", "23", "-c:a", "aac", "-fflags", "+bitexact", "-map_metadata", "-1",
                str(target))
        videos.append(target)
    shots = folder / "two_shots.mp4"
    _ffmpeg("-f", "lavfi", "-t", "5", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-t", "5",
            "-i", "mandelbrot=size=320x240:rate=25", "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]", "-map", "[v]", "-c:v", "libx264",
            "-preset", "ultrafast", "-fflags", "+bitexact", str(shots))
    listing = folder / "inputs.txt"
    listing.write_text("\n".join(map(str, [*videos, shots])) + "\n")
    return listing


def _ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)
