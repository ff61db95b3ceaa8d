"""How each pod of a replica starts the engine. Pure: commands as data, tested as rendered.

A replica on one node runs `tritonserver`, and vLLM starts its tensor-parallel workers itself
(`distributed_executor_backend: mp`). A replica over several nodes is a LeaderWorkerSet group
and forms one Ray cluster, as in LWS's vLLM example (docs/examples/vllm in kubernetes-sigs/lws):
the leader starts the Ray head, waits until all `LWS_GROUP_SIZE` nodes have joined, then starts
`tritonserver`, whose vLLM engine places its pipeline stages on the Ray nodes; each worker joins
the head at `LWS_LEADER_ADDRESS`. LWS sets both variables in every pod of the group.

Nothing from an inventory is pasted into these scripts: they hold plan constants and integers,
and the values they read come from LWS's environment at run time.
"""

from __future__ import annotations

from gpufleet.plan.k8s import TRITON_GRPC, TRITON_HTTP, TRITON_METRICS

RAY_PORT = 6379
# Ranks have this long to join (workers wait for their node's image and the cache mount too).
JOIN_TIMEOUT_S = 600
JOIN_POLL_S = 5
MODEL_REPOSITORY = "/models"

_ALIVE = (
    'python3 -c \'import ray; ray.init(address="auto", logging_level="ERROR"); '
    'print(sum(n["Alive"] for n in ray.nodes()))\''
)


def tritonserver_args() -> list[str]:
    return [
        "tritonserver",
        f"--model-repository={MODEL_REPOSITORY}",
        f"--http-port={TRITON_HTTP}",
        f"--grpc-port={TRITON_GRPC}",
        f"--metrics-port={TRITON_METRICS}",
    ]


def single_node_command() -> list[str]:
    return tritonserver_args()


def leader_command(gpus_per_node: int) -> list[str]:
    wait = JOIN_TIMEOUT_S // JOIN_POLL_S
    script = "\n".join(
        [
            "set -eu",
            f"ray start --head --port={RAY_PORT} --num-gpus={gpus_per_node} --dashboard-host=127.0.0.1 --disable-usage-stats",
            f"for i in $(seq 1 {wait}); do",
            f"  alive=$({_ALIVE})",
            '  if [ "$alive" -eq "$LWS_GROUP_SIZE" ]; then break; fi',
            f'  if [ "$i" -eq {wait} ]; then echo "only $alive of $LWS_GROUP_SIZE ranks joined" >&2; exit 1; fi',
            f"  sleep {JOIN_POLL_S}",
            "done",
            "exec " + " ".join(tritonserver_args()),
        ]
    )
    return ["bash", "-c", script]


def worker_command(gpus_per_node: int) -> list[str]:
    wait = JOIN_TIMEOUT_S // JOIN_POLL_S
    script = "\n".join(
        [
            "set -u",
            f"for i in $(seq 1 {wait}); do",
            f'  ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --num-gpus={gpus_per_node} --disable-usage-stats --block && exit 0',
            f"  sleep {JOIN_POLL_S}",
            "done",
            'echo "could not join the Ray head at $LWS_LEADER_ADDRESS" >&2',
            "exit 1",
        ]
    )
    return ["bash", "-c", script]


def leader_ready_command() -> list[str]:
    """Ready when Triton has the model and every rank of the group is alive in Ray: a group
    that lost a worker stops taking traffic before LWS recreates it."""
    script = "\n".join(
        [
            "set -eu",
            f"python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:{TRITON_HTTP}/v2/health/ready\", timeout=3)'",
            f'[ "$({_ALIVE})" -eq "$LWS_GROUP_SIZE" ]',
        ]
    )
    return ["bash", "-c", script]
