"""How long the job's writer stalls when a Redis Cluster master dies (issue 25, point 1):
``bash stack/stack.sh redis-cluster up && .venv/bin/python -m bench.redis_failover``.

Writes batches of ``--batch`` users (profile and one segment change each: the user's slot, the
change stream's slot and an audience set) through the job's own writer (``ProfileWriter``) in a
loop against the local Redis Cluster (``stack/stack.sh redis-cluster``), SIGKILLs the master of the
change stream's slot after ``--warmup`` seconds, and reports the time until ``CLUSTER NODES`` shows
its replica promoted, the longest batch (the writer back-pressuring through the failover) and
whether every batch's profiles are in Redis at the end. Restarts the killed node (it rejoins as a
replica) and deletes what it wrote. Writes ``bench/results/redis_failover.md``.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid

import click
import redis

from bench.run import RESULTS
from personalization.config.settings import REPO_ROOT, load_settings
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import ProfileWriter, changes_key, connect

STACK = ("bash", str(REPO_ROOT / "stack" / "stack.sh"), "redis-cluster")


def _flags(port: int) -> dict[int, tuple[set[str], str, str]]:
    """``CLUSTER NODES`` from the node on ``port``: port -> (flags, node id, master id)."""
    nodes = redis.Redis(port=port).execute_command("CLUSTER NODES")
    return {int(address.split("@")[0].rsplit(":", 1)[1]): (set(node["flags"].split(",")), node["node_id"],
                                                          node["master_id"]) for address, node in nodes.items()}


@click.command()
@click.option("--first-port", default=7101, show_default=True, help="stack.sh's REDIS_CLUSTER_PORT.")
@click.option("--batch", default=100, show_default=True, help="Users per write_many.")
@click.option("--warmup", default=3.0, show_default=True, help="Seconds of writes before the kill.")
@click.option("--after", default=5.0, show_default=True, help="Seconds of writes after the promotion.")
def main(first_port: int, batch: int, warmup: float, after: float) -> None:
    ports = range(first_port, first_port + 6)
    prefix = f"bench-failover:{uuid.uuid4().hex[:8]}"
    settings = load_settings(overrides=[f"redis.cluster_nodes=[{', '.join(f'127.0.0.1:{p}' for p in ports)}]",
                                        f"redis.key_prefix={prefix}", "redis.retry_backoff_max=1s"])
    client = connect(settings.redis)
    writer = ProfileWriter(client, prefix, ttl_ms=3_600_000, backoff_max_ms=1_000)
    victim = client.get_node_from_key(changes_key(prefix)).port
    witness = next(port for port in ports if port != victim)
    replicas = {port for port, (_, _, master) in _flags(witness).items() if master == _flags(witness)[victim][1]}
    durations: list[tuple[float, float]] = []  # (start, seconds) per batch
    killed_at = promoted_at = None
    version, start = 0, time.monotonic()
    while promoted_at is None or time.monotonic() < promoted_at + after:
        version += 1
        writes = [({"user_id": f"u{i}", "version": version, "n": version},
                   [{"user_id": f"u{i}", "segment": f"s{i % 6}", "action": "enter" if version % 2 else "exit",
                     "event_time": version, "rules_version": "1", "seq": version, "cause": {}}])
                  for i in range(batch)]
        t0 = time.monotonic()
        writer.write_many(writes)
        durations.append((t0, time.monotonic() - t0))
        if killed_at is None and t0 - start > warmup:
            subprocess.run([*STACK, "kill", str(victim)], check=True, capture_output=True)
            killed_at = time.monotonic()
        if killed_at is not None and promoted_at is None:
            flags = _flags(witness)
            if "fail" in flags[victim][0] and any("master" in flags[port][0] for port in replicas):
                promoted_at = time.monotonic()
    reader = ProfileReader(connect(settings.redis), prefix)
    kept = {p["user_id"]: p["version"] for p in reader.all_profiles()}
    before = [d for t, d in durations if t < killed_at]
    stall = max(d for t, d in durations if t >= killed_at)
    lines = [
        "# Redis Cluster failover under the job's writer",
        "",
        f"`.venv/bin/python -m bench.redis_failover --batch {batch}` against `stack/stack.sh redis-cluster`"
        f" (3 masters + 3 replicas on loopback, cluster-node-timeout 2 s); master {victim} SIGKILLed.",
        "",
        f"- batches: {len(durations)}, median {statistics.median(before) * 1000:.1f} ms before the kill",
        f"- kill to replica promoted (seen in CLUSTER NODES): {promoted_at - killed_at:.2f} s",
        f"- longest batch (the writer retrying through the failover): {stall:.2f} s",
        f"- profiles at the last version written: {sum(v == version for v in kept.values())} of {batch}",
    ]
    subprocess.run([*STACK, "up"], check=True, capture_output=True)  # the killed node rejoins as a replica
    reader.delete_all()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "redis_failover.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
