"""Checks across fields of a site: each problem names the key path it is about."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

from gpufleet.model.catalog import (
    AWS_GPU_INSTANCES,
    CUDA_LATEST_MINOR,
    CUDA_MIN_DRIVER,
    GPU_CATALOG,
    SERVING_MODELS,
    GPUModel,
    default_interconnect,
    replica_capacity,
    topology_problem,
)
from gpufleet.model.errors import Problem
from gpufleet.model.site import (
    MAX_CLUSTER_NODES,
    ROCE_HEADER_BYTES,
    FailureDomain,
    Inventory,
    LinkLayer,
    Network,
    Role,
)
from gpufleet.model.types import disk_path

# Where a lab host's "disks" live: sparse files inside its own root, made by `gpufleet lab up`.
LAB_OSD_DIR = "/var/lib/gpufleet/"

MIN_RAID6_MEMBERS = 4
MIN_CEPH_MONS = 3
# Sites whose GPU nodes the gate must admit: a probe without torch would fail every one of them.
PRODUCTION = ("prod", "dr")


def check_inventory(inv: Inventory) -> list[Problem]:
    return [
        *_networks(inv),
        *_unique_names_and_addresses(inv),
        *_addresses_in_networks(inv),
        *_reserved_addresses(inv),
        *_roles_and_hardware(inv),
        *_gpu_topology(inv),
        *_roce(inv),
        *_disks(inv),
        *_control_plane(inv),
        *_ceph(inv),
        *_bom(inv),
        *_perf_probe(inv),
        *_serving_and_burst(inv),
    ]


def _unique_names_and_addresses(inv: Inventory) -> Iterator[Problem]:
    hostnames: dict[str, int] = {}
    addresses: dict[IPv4Address, str] = {}
    for i, node in enumerate(inv.nodes):
        if node.hostname in hostnames:
            first = hostnames[node.hostname]
            yield Problem(("nodes", i, "hostname"), f"{node.hostname} is already used by nodes[{first}]")
        hostnames.setdefault(node.hostname, i)
        owned: list[tuple[tuple[str | int, ...], IPv4Address | None]] = [
            (("nodes", i, "management_ip"), node.management_ip),
            (("nodes", i, "bmc"), node.bmc),
        ]
        owned += [(("nodes", i, "nics", "rdma", j, "ip"), nic.ip) for j, nic in enumerate(node.nics.rdma)]
        for path, ip in owned:
            if ip is None:
                continue
            if ip in addresses:
                yield Problem(path, f"{ip} is already used by {addresses[ip]}")
            else:
                addresses[ip] = f"nodes[{i}] ({node.hostname})"


def _site_networks(inv: Inventory) -> list[tuple[str, Network]]:
    nets = inv.site.networks
    named = [("management", nets.management), ("storage", nets.storage), ("bmc", nets.bmc)]
    return [(name, net) for name, net in named if net is not None]


def _networks(inv: Inventory) -> Iterator[Problem]:
    """Gateways inside their networks; no two of the site's address ranges overlap."""
    for name, net in _site_networks(inv):
        gw = net.gateway
        path = ("site", "networks", name, "gateway")
        if gw is not None and gw not in net.cidr:
            yield Problem(path, f"gateway {gw} is outside the network {net.cidr}")
        elif (
            gw is not None
            and net.cidr.prefixlen < 31
            and gw in (net.cidr.network_address, net.cidr.broadcast_address)
        ):
            yield Problem(path, f"gateway {gw} is the network's own or broadcast address")
    k8s = inv.site.kubernetes
    ranges: list[tuple[tuple[str, ...], IPv4Network]] = [
        (("site", "kubernetes", "pod_cidr"), k8s.pod_cidr),
        (("site", "kubernetes", "service_cidr"), k8s.service_cidr),
        *((("site", "networks", name, "cidr"), net.cidr) for name, net in _site_networks(inv)),
    ]
    for i, (where, cidr) in enumerate(ranges):
        for other_path, other in ranges[:i]:
            if cidr.overlaps(other):
                yield Problem(where, f"{cidr} overlaps {'.'.join(other_path)} {other}")


def _reserved_addresses(inv: Inventory) -> Iterator[Problem]:
    """No node takes a gateway's, a DNS server's, or a network's own or broadcast address."""
    reserved: dict[IPv4Address, str] = {ip: "a DNS server's address" for ip in inv.site.networks.dns}
    for name, net in _site_networks(inv):
        if net.gateway is not None:
            reserved[net.gateway] = f"the {name} network's gateway"
        if net.cidr.prefixlen < 31:
            reserved[net.cidr.network_address] = f"the {name} network's own address"
            reserved[net.cidr.broadcast_address] = f"the {name} network's broadcast address"
    for i, node in enumerate(inv.nodes):
        owned: list[tuple[tuple[str | int, ...], IPv4Address | None]] = [
            (("nodes", i, "management_ip"), node.management_ip),
            (("nodes", i, "bmc"), node.bmc),
        ]
        owned += [(("nodes", i, "nics", "rdma", j, "ip"), nic.ip) for j, nic in enumerate(node.nics.rdma)]
        for path, ip in owned:
            if ip is not None and ip in reserved:
                yield Problem(path, f"{ip} is {reserved[ip]}")


def _addresses_in_networks(inv: Inventory) -> Iterator[Problem]:
    nets = inv.site.networks
    for i, node in enumerate(inv.nodes):
        if node.management_ip not in nets.management.cidr:
            yield Problem(
                ("nodes", i, "management_ip"),
                f"{node.management_ip} is outside the management network {nets.management.cidr}",
            )
        if node.bmc is not None and nets.bmc is not None and node.bmc not in nets.bmc.cidr:
            yield Problem(("nodes", i, "bmc"), f"{node.bmc} is outside the BMC network {nets.bmc.cidr}")
        for j, nic in enumerate(node.nics.rdma):
            if nic.ip is None:
                continue
            path = ("nodes", i, "nics", "rdma", j, "ip")
            if nets.storage is None:
                yield Problem(path, "an RDMA address needs site.networks.storage")
            elif nic.ip not in nets.storage.cidr:
                yield Problem(path, f"{nic.ip} is outside the storage network {nets.storage.cidr}")


def dominant_gpu(inv: Inventory) -> GPUModel | None:
    """The GPU model most nodes carry: on-prem serving runs on it."""
    models = [n.gpu.model for n in inv.nodes if n.gpu is not None]
    return max(sorted(set(models)), key=models.count) if models else None


def _roles_and_hardware(inv: Inventory) -> Iterator[Problem]:
    for i, node in enumerate(inv.nodes):
        has_role = Role.GPU in node.roles
        if node.gpu is not None and not has_role:
            yield Problem(("nodes", i, "roles"), f"{node.hostname} has GPUs but not the gpu role")
        if node.gpu is None and has_role:
            yield Problem(("nodes", i, "gpu"), f"{node.hostname} has the gpu role but no GPUs")
        if Role.STORAGE in node.roles and not node.disks.ceph_osd:
            yield Problem(
                ("nodes", i, "disks", "ceph_osd"), "a storage node needs at least one Ceph OSD device"
            )
        if len({nic.gid_index for nic in node.nics.rdma}) > 1:
            yield Problem(
                ("nodes", i, "nics", "rdma"),
                "every RDMA NIC of a node needs the same gid_index: NCCL_IB_GID_INDEX takes one value",
            )
        if node.disks.ceph_osd and Role.STORAGE not in node.roles:
            yield Problem(
                ("nodes", i, "roles"), f"{node.hostname} has Ceph OSD devices but not the storage role"
            )


def _gpu_topology(inv: Inventory) -> Iterator[Problem]:
    for i, node in enumerate(inv.nodes):
        if node.gpu is None:
            continue
        interconnect = node.gpu.interconnect or default_interconnect(node.gpu.model)
        problem = topology_problem(node.gpu.model, node.gpu.count, interconnect)
        if problem:
            yield Problem(
                ("nodes", i, "gpu", "interconnect"), f"unknown topology {interconnect.value}: {problem}"
            )


def _roce(inv: Inventory) -> Iterator[Problem]:
    """A RoCE port's MTU, PFC and DSCP trust are set on its netdev, sized for the storage network."""
    storage = inv.site.networks.storage
    for i, node in enumerate(inv.nodes):
        for j, nic in enumerate(node.nics.rdma):
            if nic.link_layer is not LinkLayer.ROCE:
                continue
            path = ("nodes", i, "nics", "rdma", j)
            if nic.netdev is None:
                yield Problem((*path, "netdev"), "a RoCE NIC needs its netdev: MTU and PFC are set there")
            if storage is not None and nic.mtu + ROCE_HEADER_BYTES > storage.mtu:
                yield Problem(
                    (*path, "mtu"),
                    f"RDMA MTU {nic.mtu} needs a netdev MTU of at least {nic.mtu + ROCE_HEADER_BYTES}; "
                    f"the storage network's is {storage.mtu}",
                )


def _disks(inv: Inventory) -> Iterator[Problem]:
    for i, node in enumerate(inv.nodes):
        disks = node.disks
        base = ("nodes", i, "disks")
        if disks.raid6 is not None and len(disks.raid6.members) < MIN_RAID6_MEMBERS:
            yield Problem(
                (*base, "raid6", "members"),
                f"RAID6 needs at least {MIN_RAID6_MEMBERS} members, found {len(disks.raid6.members)}",
            )
        for j, device in enumerate(disks.ceph_osd):
            if inv.site.environment == "lab" and device.startswith(LAB_OSD_DIR):
                continue
            try:
                disk_path(device)
            except ValueError as exc:
                yield Problem((*base, "ceph_osd", j), str(exc))
        uses: dict[str, str] = {}
        groups = {
            "raid6.members": disks.raid6.members if disks.raid6 else [],
            "ceph_osd": disks.ceph_osd,
            "nvme_scratch": disks.nvme_scratch,
        }
        for group, devices in groups.items():
            for j, device in enumerate(devices):
                if device in uses:
                    where = "twice" if uses[device] == group else f"in both {uses[device]} and {group}"
                    yield Problem((*base, *group.split("."), j), f"{device} is used {where}")
                uses.setdefault(device, group)


def _control_plane(inv: Inventory) -> Iterator[Problem]:
    count = sum(Role.CONTROL_PLANE in n.roles for n in inv.nodes)
    if count % 2 == 0:
        yield Problem(("nodes",), f"etcd needs an odd number of control-plane nodes, found {count}")


def _ceph(inv: Inventory) -> Iterator[Problem]:
    storage = [n for n in inv.nodes if Role.STORAGE in n.roles]
    if inv.site.ceph is None:
        if storage:
            yield Problem(("site", "ceph"), "storage nodes are listed but the site has no ceph section")
        return
    if len(storage) < MIN_CEPH_MONS:
        yield Problem(
            ("site", "ceph"),
            f"Ceph needs at least {MIN_CEPH_MONS} storage hosts for monitors, found {len(storage)}",
        )
    names: dict[str, int] = {}
    for i, pool in enumerate(inv.site.ceph.pools):
        if pool.name in names:
            yield Problem(
                ("site", "ceph", "pools", i, "name"), f"{pool.name} is already pools[{names[pool.name]}]"
            )
        names.setdefault(pool.name, i)
    osds = sum(len(n.disks.ceph_osd) for n in storage)
    racks = {n.rack for n in storage if n.rack is not None}
    for i, pool in enumerate(inv.site.ceph.pools):
        domains = {
            FailureDomain.OSD: (osds, "OSDs"),
            FailureDomain.HOST: (len(storage), "storage hosts"),
            FailureDomain.RACK: (len(racks), "racks with storage hosts"),
        }
        have, what = domains[pool.failure_domain]
        if have < pool.size:
            yield Problem(
                ("site", "ceph", "pools", i, "size"),
                f"size {pool.size} under failure domain {pool.failure_domain} needs {pool.size} {what}, "
                f"found {have}",
            )


def _bom(inv: Inventory) -> Iterator[Problem]:
    bom = inv.bom
    gpus = {n.gpu.model for n in inv.nodes if n.gpu is not None}
    if not gpus:
        return
    driver = bom.nvidia_driver
    if driver is None:
        yield Problem(("bom", "nvidia_driver"), "the site has GPUs but the BOM has no NVIDIA driver")
        return
    for model in sorted(gpus):
        need = GPU_CATALOG[model].min_driver_branch
        if driver.branch < need:
            yield Problem(
                ("bom", "nvidia_driver", "branch"),
                f"{model} needs driver branch >= {need}, found {driver.branch}",
            )
    if bom.cuda is None:
        yield Problem(("bom", "cuda"), "the site has GPUs but the BOM has no CUDA version")
        return
    major, minor = (int(x) for x in bom.cuda.split("."))
    need_driver = CUDA_MIN_DRIVER.get(major)
    if need_driver is None or minor > CUDA_LATEST_MINOR[major]:
        known = ", ".join(f"{m}.0-{m}.{CUDA_LATEST_MINOR[m]}" for m in sorted(CUDA_LATEST_MINOR))
        yield Problem(("bom", "cuda"), f"CUDA {bom.cuda} is not a released version ({known})")
    elif driver.branch < need_driver:
        yield Problem(
            ("bom", "nvidia_driver", "version"),
            f"CUDA {bom.cuda} needs driver >= {need_driver}, found {driver.version}",
        )
    if bom.nccl is None:
        yield Problem(("bom", "nccl"), "the site has GPUs but the BOM has no NCCL version")
    elif bom.nccl.cuda.split(".")[0] != str(major):
        yield Problem(
            ("bom", "nccl", "cuda"),
            f"NCCL is built for CUDA {bom.nccl.cuda} but the BOM's CUDA is {bom.cuda}",
        )


def _perf_probe(inv: Inventory) -> Iterator[Problem]:
    """The perf probe's torch: a CUDA build of the BOM's major, and on production sites a source."""
    if not any(n.gpu is not None for n in inv.nodes):
        return
    torch, cuda = inv.bom.perf_torch, inv.bom.cuda
    if torch is not None and cuda is not None and torch.cuda.split(".")[0] != cuda.split(".")[0]:
        yield Problem(
            ("bom", "perf_torch", "cuda"),
            f"torch is built for CUDA {torch.cuda} but the BOM's CUDA is {cuda}",
        )
    if inv.site.environment not in PRODUCTION or inv.site.performance.python is not None:
        return
    if inv.site.package_sources.python_index is None:
        yield Problem(
            ("site", "package_sources", "python_index"),
            "a production site's GPU nodes need the perf probe's torch: set the Python index that serves "
            "bom.perf_torch (or site.performance.python)",
        )
    if torch is None:
        yield Problem(
            ("bom", "perf_torch"), "a production site's GPU nodes need the perf probe's torch pinned"
        )


def _serving_and_burst(inv: Inventory) -> Iterator[Problem]:
    serving, burst = inv.site.serving, inv.site.burst
    if serving is not None and serving.model not in SERVING_MODELS:
        yield Problem(
            ("site", "serving", "model"),
            f"unknown model {serving.model!r}; known: {', '.join(SERVING_MODELS)}",
        )
    elif serving is not None:
        gpu = dominant_gpu(inv)
        counts = [n.gpu.count for n in inv.nodes if n.gpu is not None and n.gpu.model == gpu]
        fits = replica_capacity(serving.model, gpu, counts) if gpu else 0
        if serving.replicas > fits:
            yield Problem(
                ("site", "serving", "replicas"),
                f"{serving.replicas} replicas of {serving.model} do not fit the site's GPUs (room for {fits})",
            )
    if burst is not None and serving is None:
        yield Problem(("site", "burst"), "burst needs site.serving: burst nodes serve the site's model")
    if burst is not None and len(inv.nodes) + burst.max_nodes > MAX_CLUSTER_NODES:
        yield Problem(
            ("site", "burst", "max_nodes"),
            f"{burst.max_nodes} burst nodes and the site's {len(inv.nodes)} exceed the {MAX_CLUSTER_NODES:,} nodes "
            "Kubernetes supports in one cluster",
        )
    if burst is not None:
        for i, name in enumerate(burst.instance_types or []):
            if name not in AWS_GPU_INSTANCES:
                yield Problem(("site", "burst", "instance_types", i), f"unknown GPU instance type {name!r}")
