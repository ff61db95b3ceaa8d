"""How each pod of a replica starts the engine. Pure: commands as data, tested as rendered.

A replica on one node runs `tritonserver`, and vLLM starts its tensor-parallel workers itself
(`distributed_executor_backend: mp`). A replica over several nodes is a LeaderWorkerSet group
and forms one Ray cluster, as in LWS's vLLM example (docs/examples/vllm in kubernetes-sigs/lws):
the leader starts the Ray head, waits until all `LWS_GROUP_SIZE` nodes have joined, then starts
`tritonserver`, whose vLLM engine places its pipeline stages on the Ray nodes; each worker joins
the head at `LWS_LEADER_ADDRESS`. LWS sets both variables in every pod of the group.

What may fail for a moment is retried, not fatal: the head's port still held after a fast
restart, a Ray query while the head comes up, a worker that starts before its head listens. What
ends a rank after it joined ends its container: LWS (`RecreateGroupOnPodRestart`) then recreates
the whole group, since an engine whose actors lived on that rank cannot continue.

Membership is counted by one long-lived Ray driver in the leader (`ranks_watcher`), which writes
`<epoch> <live nodes>` to RANKS_FILE every few seconds. The readiness probe reads that file and
asks Triton's health endpoint with bash builtins only (no Python, no process per probe beyond the
shell), and fails when the count is short or the file is stale (the watcher lost the head).

Nothing from an inventory is pasted into these scripts: they hold plan constants and integers,
and the values they read come from LWS's environment at run time.
"""

from __future__ import annotations

from gpufleet.plan.k8s import TRITON_GRPC, TRITON_HTTP, TRITON_METRICS

RAY_PORT = 6379
# Ranks have this long to join (workers wait for their node's image and the cache mount too).
JOIN_TIMEOUT_S = 600
JOIN_POLL_S = 5
# Attempts at `ray start --head` before the leader gives up (its port may still be held briefly).
HEAD_ATTEMPTS = 5
MODEL_REPOSITORY = "/models"
RANKS_FILE = "/tmp/gpufleet-ranks"
# The watcher writes every JOIN_POLL_S; a count older than this is not believed.
RANKS_STALE_S = 30

# One driver for the life of the pod (a driver per query would add a job to the head's table
# each time): the live node count, written atomically, until the head goes away.
_WATCH = """import os, sys, time
import ray
ray.init(address="auto", logging_level="ERROR")
path, every = sys.argv[1], float(sys.argv[2])
while True:
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    with open(path + ".tmp", "w") as f:
        f.write("%d %d\\n" % (time.time(), alive))
    os.replace(path + ".tmp", path)
    time.sleep(every)"""


def tritonserver_args(http_port: int = TRITON_HTTP) -> list[str]:
    return [
        "tritonserver",
        f"--model-repository={MODEL_REPOSITORY}",
        f"--http-port={http_port}",
        f"--grpc-port={TRITON_GRPC}",
        f"--metrics-port={TRITON_METRICS}",
    ]


def single_node_command() -> list[str]:
    return tritonserver_args()


def _count_ranks(ranks_file: str) -> list[str]:
    """Sets `at` and `alive` from the watcher's file, or fails; builtins only."""
    return [
        f"read -r at alive 2>/dev/null < {ranks_file} || return 1",
        'case "$at$alive" in "" | *[!0-9]*) return 1 ;; esac',
    ]


def leader_command(
    gpus_per_node: int,
    *,
    join_timeout_s: int = JOIN_TIMEOUT_S,
    poll_s: int = JOIN_POLL_S,
    ranks_file: str = RANKS_FILE,
    http_port: int = TRITON_HTTP,
) -> list[str]:
    wait = max(1, join_timeout_s // poll_s)
    script = "\n".join(
        [
            "set -u",
            f"for i in $(seq 1 {HEAD_ATTEMPTS}); do",
            f"  ray start --head --port={RAY_PORT} --num-gpus={gpus_per_node} --dashboard-host=127.0.0.1 "
            "--disable-usage-stats && break",
            f'  if [ "$i" -eq {HEAD_ATTEMPTS} ]; then echo "the Ray head did not start" >&2; exit 1; fi',
            "  ray stop --force >/dev/null 2>&1",
            f"  sleep {poll_s}",
            "done",
            # The watcher is restarted whenever its driver ends (e.g. a Ray query failed).
            f"(while :; do python3 -c '{_WATCH}' {ranks_file} {poll_s}; sleep {poll_s}; done) &",
            "ranks() {",
            *(f"  {line}" for line in _count_ranks(ranks_file)),
            '  [ "$alive" -ge "$LWS_GROUP_SIZE" ]',
            "}",
            f"for i in $(seq 1 {wait}); do",
            "  ranks && break",
            f'  if [ "$i" -eq {wait} ]; then echo "only ${{alive:-0}} of $LWS_GROUP_SIZE ranks joined" >&2; exit 1; fi',
            f"  sleep {poll_s}",
            "done",
            "exec " + " ".join(tritonserver_args(http_port)),
        ]
    )
    return ["bash", "-c", script]


def worker_command(
    gpus_per_node: int, *, join_timeout_s: int = JOIN_TIMEOUT_S, poll_s: int = JOIN_POLL_S
) -> list[str]:
    """Wait (bash's /dev/tcp, no client needed) until the head listens, then join it once and
    block: when this rank's Ray processes end, so does the container, and LWS recreates the group."""
    wait = max(1, join_timeout_s // poll_s)
    script = "\n".join(
        [
            "set -u",
            f"for i in $(seq 1 {wait}); do",
            f'  timeout 3 bash -c "exec 3<>/dev/tcp/$LWS_LEADER_ADDRESS/{RAY_PORT}" 2>/dev/null && break',
            f'  if [ "$i" -eq {wait} ]; then echo "the Ray head at $LWS_LEADER_ADDRESS never listened" >&2; exit 1; fi',
            f"  sleep {poll_s}",
            "done",
            f'exec ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --num-gpus={gpus_per_node} '
            "--disable-usage-stats --block",
        ]
    )
    return ["bash", "-c", script]


def leader_ready_command(
    *, ranks_file: str = RANKS_FILE, http_port: int = TRITON_HTTP, stale_s: int = RANKS_STALE_S
) -> list[str]:
    """Ready while the watcher counted every rank of the group within `stale_s` and Triton has
    the model: a group that lost a worker stops taking traffic before LWS recreates it. Bash
    builtins only: no interpreter starts per probe."""
    script = "\n".join(
        [
            "ready() {",
            *(f"  {line}" for line in _count_ranks(ranks_file)),
            "  printf -v now '%(%s)T' -1",
            f'  [ $((now - at)) -le {stale_s} ] && [ "$alive" -ge "$LWS_GROUP_SIZE" ] || return 1',
            f"  exec 3<>/dev/tcp/127.0.0.1/{http_port} || return 1",
            "  printf 'GET /v2/health/ready HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3",
            "  read -r -t 3 _ code _ <&3",
            '  [ "$code" = 200 ]',
            "}",
            "ready",
        ]
    )
    return ["bash", "-c", script]
