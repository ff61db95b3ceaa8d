"""Generate a valid site document of any size, shaped like dc1 (for benchmarks and property tests)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

MGMT, STORAGE, BMC = IPv4Address("10.0.0.0"), IPv4Address("10.64.0.0"), IPv4Address("10.128.0.0")


def generate_site(nodes: int, name: str = "gen") -> dict[str, Any]:
    """`nodes` in total: 3 control-plane, one storage node per ten (at least 3), the rest GPU nodes."""
    if nodes < 7:
        raise ValueError("a generated site needs at least 7 nodes (3 control plane, 3 storage, 1 GPU)")
    storage = max(3, nodes // 10)
    gpu = nodes - 3 - storage
    docs: list[dict[str, Any]] = []
    for i in range(nodes):
        host = f"n{i:05d}"
        node: dict[str, Any] = {
            "hostname": host,
            "management_ip": str(MGMT + 10 + i),
            "bmc": str(BMC + 10 + i),
            "rack": f"r{i // 16}",
            "nics": {"management": {"device": "eno1"}},
        }
        if i < 3:
            node["roles"] = ["control-plane"]
        elif i < 3 + storage:
            node["roles"] = ["storage"]
            node["nics"]["rdma"] = [
                {
                    "device": "mlx5_0",
                    "netdev": "enp65s0f0np0",
                    "link_layer": "roce",
                    "mtu": 4096,
                    "gid_index": 3,
                    "ip": str(STORAGE + 10 + i),
                }
            ]
            node["disks"] = {
                "raid6": {"members": [f"/dev/sd{c}" for c in "abcdef"]},
                "ceph_osd": [f"/dev/nvme{j}n1" for j in range(4)],
            }
        else:
            node["roles"] = ["gpu", "worker"]
            node["gpu"] = {"model": "H100-SXM-80GB", "count": 8}
            node["nics"]["rdma"] = [
                {"device": f"mlx5_{j}", "link_layer": "infiniband", "mtu": 4096, "gid_index": 0}
                for j in range(8)
            ]
            node["disks"] = {"nvme_scratch": ["/dev/nvme0n1", "/dev/nvme1n1"]}
        docs.append(node)
    return {
        "site": {
            "name": name,
            "environment": "prod",
            "os": {"distro": "ubuntu", "release": "24.04", "codename": "noble"},
            "networks": {
                "management": {"cidr": "10.0.0.0/10", "mtu": 1500},
                "storage": {"cidr": "10.64.0.0/10", "mtu": 9000},
                "bmc": {"cidr": "10.128.0.0/10"},
            },
            "package_sources": {"python_index": f"https://pypi.{name}.example.internal/simple/"},
            # The default service range (10.96.0.0/12) lies inside this storage network.
            "kubernetes": {
                "control_plane_endpoint": f"api.{name}.example.internal:6443",
                "service_cidr": "172.20.0.0/16",
            },
            "ceph": {"pools": [{"name": "models", "size": 3, "min_size": 2}]},
            # DeepSeek-R1 on H100 spans two nodes per replica.
            "serving": {"model": "deepseek-r1", "replicas": gpu // 2},
            "burst": {"region": "us-east-1", "max_nodes": 8, "max_hourly_usd": 400},
        },
        "bom": {
            "nvidia_driver": {"branch": 580, "version": "580.159.04"},
            "cuda": "13.0",
            "nccl": {"version": "2.28.3", "cuda": "13.0"},
            "perf_torch": {"version": "2.9.1", "cuda": "13.0"},
            "nvidia_container_toolkit": "1.18.0",
            "containerd": "1.7",
            "kubernetes": "1.31.4",
            "triton_image": "nvcr.io/nvidia/tritonserver:26.10-vllm-python-py3",
            "vllm": "0.33.0",
            "gateway_image": "docker.io/library/haproxy:2.6.12",
            # The revisions dc1 pins for the same models: burst plans need both.
            "model_revision": "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad",
            "burst_model_revision": "0d6d11a6ea1187363aa7b78543f824fc02e06b14",
        },
        "nodes": docs,
    }
