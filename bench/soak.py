"""Soak the commit protocol: random kills (local and Ray), two writers at once, damage injections,
in a loop; after each round the corpus is finished (re-run, and `verify --repair` for damage a run's
size check cannot see) and compared with a clean run: samples lost, duplicated, or with other bytes.

    python bench/soak.py --rounds 12 --executors local ray --seed 0

Every round prints what it did; the end prints the counts of runs, kills, damaged states and the
losses (0 is the goal). Inputs: the demo videos plus two short real videos, one sample per shard.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
sys.path.insert(0, str(REPO))

from curation.demo import make_demo_inputs  # noqa: E402

DAMAGES = ("delete_part", "truncate_shard", "delete_marker", "garbage_marker", "flip_byte", "orphan_shard")


def main(argv=None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    listing = inputs(work)
    reference = work / "reference"
    run(listing, reference, "local")
    expected = digest(reference)
    print(f"reference: {len(expected)} samples from {len(listing.read_text().splitlines())} videos ({work})")
    counts = Counter()
    for round_number in range(args.rounds):
        executor = rng.choice(args.executors)
        output = work / f"round-{round_number}"
        action = rng.choice(["kill", "kill", "concurrent", "damage"])
        done = play(action, executor, listing, output, rng, counts)
        finish(listing, output, executor, counts)
        lost, duplicated, changed = compare(digest_counts(output), expected)
        counts.update(lost=lost, duplicated=duplicated, changed=changed)
        print(f"round {round_number:>2} {executor:>5} {action:<10} {done:<40} lost {lost} duplicated {duplicated} "
              f"changed {changed}", flush=True)
    print(f"\n{args.rounds} rounds: {counts['runs']} runs, {counts['kills']} kills, {counts['refused']} runs refused "
          f"by the lease, {counts['damaged']} damaged states, {counts['quarantined']} quarantine moves")
    print(f"samples lost {counts['lost']}, duplicated {counts['duplicated']}, with other bytes {counts['changed']}")


def play(action: str, executor: str, listing: Path, output: Path, rng: random.Random, counts: Counter) -> str:
    if action == "kill":
        kills = rng.randint(1, 3)
        for _ in range(kills):
            process = start(listing, output, executor)
            time.sleep(rng.uniform(2.0, 12.0 if executor == "ray" else 6.0))
            counts.update(runs=1, kills=process.poll() is None)
            process.kill()
            process.wait()
        return f"{kills} kill(s) mid-run"
    if action == "concurrent":
        first = start(listing, output, executor)
        time.sleep(rng.uniform(0.5, 3.0))
        second = start(listing, output, executor)
        codes = (first.wait(), second.wait())
        counts.update(runs=2, refused=codes.count(2))
        return f"two writers: exit codes {codes}"
    run(listing, output, executor)
    counts.update(runs=1)
    damage = rng.choice(DAMAGES)
    inject(damage, output, rng)
    counts.update(damaged=1)
    return f"finished, then {damage}"


def finish(listing: Path, output: Path, executor: str, counts: Counter) -> None:
    repair = subprocess.run([sys.executable, "-m", "curation.cli", "verify", "--repair", str(output)], cwd=REPO,
                            capture_output=True, text=True)
    counts.update(quarantined=repair.stdout.count("damaged") + repair.stdout.count("uncommitted  "))
    run(listing, output, executor)
    counts.update(runs=1)
    quarantine = output / "quarantine"
    counts.update(quarantined=sum(1 for p in quarantine.rglob("*.json") if "commits" in p.parts) if quarantine.exists() else 0)


def inject(damage: str, output: Path, rng: random.Random) -> None:
    shards = sorted((output / "shards").glob("*.tar"))
    markers = sorted((output / "index" / "commits").glob("*.json"))
    if damage == "delete_part":
        rng.choice(sorted((output / "index" / "parts").glob("*.clips.parquet"))).unlink()
    elif damage == "truncate_shard":
        shard = rng.choice(shards)
        shard.write_bytes(shard.read_bytes()[: rng.randint(0, shard.stat().st_size - 1)])
    elif damage == "delete_marker":
        rng.choice(markers).unlink()
    elif damage == "garbage_marker":
        rng.choice(markers).write_bytes(b"\0" * rng.randint(0, 64))
    elif damage == "flip_byte":
        shard = rng.choice(shards)
        data = bytearray(shard.read_bytes())
        data[rng.randrange(1024, len(data) - 1024)] ^= 0xFF  # inside a member, not the tar headers
        shard.write_bytes(bytes(data))
    else:  # a shard no commit names, as a task killed between its shard and its marker leaves
        (output / "shards" / "99999999T000000-orphan-00000-000-abcdef.tar").write_bytes(shards[0].read_bytes())


def start(listing: Path, output: Path, executor: str) -> subprocess.Popen:
    return subprocess.Popen(command(listing, output, executor), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run(listing: Path, output: Path, executor: str) -> None:
    done = subprocess.run(command(listing, output, executor), cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")


def command(listing: Path, output: Path, executor: str) -> list[str]:
    return [sys.executable, "-m", "curation.cli", "run", "--pipeline", "ingest", "--input", str(listing),
            "--output", str(output), "--executor", executor, "--no-progress", "--set", "write.max_samples_per_shard=1",
            "--set", "encode.preset=ultrafast"]


def inputs(work: Path) -> Path:
    videos = sorted(make_demo_inputs(work / "demo").glob("*.mp4"))
    videos += [p for p in (REALDATA / "data-juicer/tests/ops/data" / n for n in ("video1.mp4", "video5.mp4")) if p.exists()]
    listing = work / "inputs.txt"
    listing.write_text("\n".join(map(str, videos)) + "\n")
    return listing


def digest(output: Path) -> dict[str, str]:
    return {key: hashes[0] for key, hashes in digest_counts(output).items()}


def digest_counts(output: Path) -> dict[str, list[str]]:
    """key -> the hash of each copy of the sample in the committed shards (one copy when all is well)."""
    found: dict[str, list[str]] = {}
    for shard in (output / "index" / "shards.txt").read_text().split():
        samples: dict[str, hashlib._Hash] = {}
        with tarfile.open(output / shard) as tar:
            for member in tar:
                key = member.name.partition(".")[0]
                samples.setdefault(key, hashlib.sha256()).update(member.name.encode() + tar.extractfile(member).read())
        for key, hashed in samples.items():
            found.setdefault(key, []).append(hashed.hexdigest())
    return found


def compare(found: dict[str, list[str]], expected: dict[str, str]) -> tuple[int, int, int]:
    lost = len(set(expected) - set(found))
    duplicated = sum(len(copies) - 1 for copies in found.values())
    changed = sum(1 for key, copies in found.items() if key not in expected or expected[key] not in copies)
    return lost, duplicated, changed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--executors", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
