"""The node deploy: every concern of one node, each a @deploy driven by the host's NodePlan.

The plan travels in host data (`gpufleet_plan`); nothing here decides a value, it only carries
the plan out. Order matters where one concern feeds another: sources before packages, packages
before their configuration, configuration before services.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from deploys.facts.nvidia import NvidiaLoadedDriver
from deploys.operations import nvidia as nvidia_ops
from deploys.operations import packages as pkg_ops
from deploys.operations import perf as perf_ops
from deploys.operations import raid6 as raid_ops
from deploys.operations import rdma as rdma_ops
from deploys.operations import swap as swap_ops
from gpufleet.plan.node import NVIDIA_RUNTIME, NodePlan

SOURCES_DIR = "/etc/apt/sources.list.d"
KEYRINGS_DIR = "/etc/apt/keyrings"
PINS_FILE = "/etc/apt/preferences.d/gpufleet-pins"
SYSCTL_FILE = "/etc/sysctl.d/90-gpufleet.conf"
GRUB_FILE = "/etc/default/grub.d/90-gpufleet.cfg"
BLACKLIST_FILE = "/etc/modprobe.d/gpufleet-blacklist.conf"
MODULES_FILE = "/etc/modules-load.d/90-gpufleet.conf"
NCCL_CONF = "/etc/nccl.conf"
CONTAINERD_CONF = "/etc/containerd/config.toml"
LIMITS_FILE = "/etc/security/limits.d/90-gpufleet.conf"
# limits.conf binds PAM sessions only: services (and the containers they start) need a drop-in.
CONTAINERD_LIMITS = "/etc/systemd/system/containerd.service.d/90-gpufleet-limits.conf"
ROCE_UNIT = "gpufleet-rdma.service"
ROCE_UNIT_FILE = f"/etc/systemd/system/{ROCE_UNIT}"
SYSTEMD_LIMITS = {"memlock": "LimitMEMLOCK", "nofile": "LimitNOFILE"}
APT_CACHE_S = 24 * 3600
AFTER_CHANGE = {
    GRUB_FILE: "update-grub",
    BLACKLIST_FILE: "update-initramfs -u",
    CONTAINERD_CONF: "systemctl restart containerd",
    CONTAINERD_LIMITS: "systemctl daemon-reload && systemctl restart containerd",
    ROCE_UNIT_FILE: "systemctl daemon-reload",
}
MANAGED = "# Managed by gpufleet (deploys/); edits are replaced on the next provision.\n"


def node_plan() -> NodePlan:
    plan = host.data.get("gpufleet_plan")
    if not isinstance(plan, NodePlan):
        raise TypeError(f"{host.name}: host data gpufleet_plan must be a NodePlan, got {type(plan).__name__}")
    return plan


def sources_text(plan: NodePlan) -> dict[str, str]:
    """deb822 files per source, each signed by the keyring of its own name."""
    out = {}
    for src in plan.apt_sources:
        lines = [f"Types: deb\nURIs: {src.uri}\nSuites: {src.suite}\n"]
        if src.components:
            lines.append(f"Components: {' '.join(src.components)}\n")
        lines.append(f"Signed-By: {KEYRINGS_DIR}/{src.name}.gpg\n")
        out[f"{SOURCES_DIR}/{src.name}.sources"] = "".join(lines)
    return out


def managed_files(plan: NodePlan) -> dict[str, str]:
    """Every file the node deploy owns, path -> full content; what each says comes from the plan."""
    files_: dict[str, str] = dict(sources_text(plan))
    files_[PINS_FILE] = pkg_ops.pin_preferences(plan.packages)
    if plan.sysctl:
        files_[SYSCTL_FILE] = "".join(f"{k} = {v}\n" for k, v in plan.sysctl.items())
    if plan.kernel_cmdline:
        files_[GRUB_FILE] = (
            f'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT {" ".join(plan.kernel_cmdline)}"\n'
        )
    if plan.blacklist_modules:
        files_[BLACKLIST_FILE] = "".join(
            f"blacklist {m}\noptions {m} modeset=0\n" for m in plan.blacklist_modules
        )
    if plan.limits:
        files_[LIMITS_FILE] = "".join(f"{x.domain} {x.type} {x.item} {x.value}\n" for x in plan.limits)
    if plan.kernel_modules:
        files_[MODULES_FILE] = "".join(f"{m}\n" for m in plan.kernel_modules)
    if plan.nccl_conf is not None:
        files_[NCCL_CONF] = plan.nccl_conf
    if "containerd" in plan.services:
        files_[CONTAINERD_CONF] = containerd_config(plan)
        if plan.limits:
            files_[CONTAINERD_LIMITS] = containerd_limits(plan)
    if any(p.roce for p in plan.rdma):
        files_[ROCE_UNIT_FILE] = roce_unit(plan)
    return {path: MANAGED + text for path, text in files_.items()}


@deploy("apt sources and pinned packages")
def packages(plan: NodePlan, managed: dict[str, str]) -> None:
    changed = [
        files.put(name=f"file {path}", src=StringIO(managed[path]), dest=path, mode="644")
        for path in managed
        if path.startswith(SOURCES_DIR) or path == PINS_FILE
    ]
    apt.update(name="apt update (sources or pins changed)", _if=any_changed(*changed))
    apt.update(name="apt update (daily)", cache_time=APT_CACHE_S)
    pkg_ops.pinned(name="pinned and held packages", packages=plan.packages)
    if nvidia_ops.driver_pin(plan.packages):
        nvidia_ops.reboot_marker(name="reboot marker for a driver upgrade", packages=plan.packages)


@deploy("configuration files")
def configuration(plan: NodePlan, managed: dict[str, str], driver_loaded: bool) -> None:
    for path, text in managed.items():
        if path.startswith(SOURCES_DIR) or path == PINS_FILE:
            continue
        put = files.put(name=f"file {path}", src=StringIO(text), dest=path, mode="644")
        # What makes a changed file take effect; a new kernel command line waits for the next reboot.
        if path in AFTER_CHANGE:
            server.shell(name=AFTER_CHANGE[path], commands=[AFTER_CHANGE[path]], _if=put.did_change)
    for module in nvidia_ops.now(plan.kernel_modules, driver_loaded):
        server.modprobe(name=f"module {module}", module=module)
    for key, value in plan.sysctl.items():
        server.sysctl(name=f"sysctl {key}", key=key, value=value)
    if plan.swap_off:
        swap_ops.swap_off(name="swap off (kubelet)")


def containerd_config(plan: NodePlan) -> str:
    """systemd cgroups (kubelet's driver); the NVIDIA runtime where the toolkit is planned."""
    text = (
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  SystemdCgroup = true\n"
    )
    if any(p.name == "nvidia-container-toolkit" for p in plan.packages):
        # The handler of the `nvidia` RuntimeClass that serving pods name.
        runtime = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{NVIDIA_RUNTIME}'
        text += (
            f"{runtime}]\n"
            '  runtime_type = "io.containerd.runc.v2"\n'
            f"{runtime}.options]\n"
            '  BinaryName = "/usr/bin/nvidia-container-runtime"\n'
            "  SystemdCgroup = true\n"
        )
    return text


def containerd_limits(plan: NodePlan) -> str:
    """The plan's limits for containerd and the containers it starts (systemd says `infinity`)."""
    values = {x.item: "infinity" if x.value == "unlimited" else x.value for x in plan.limits}
    return "[Service]\n" + "".join(f"{SYSTEMD_LIMITS[k]}={v}\n" for k, v in sorted(values.items()))


def roce_unit(plan: NodePlan) -> str:
    """A oneshot unit that applies the RoCE settings at every boot, before the network is online."""
    ports = [p.roce for p in plan.rdma if p.roce is not None]
    devices = " ".join(f"sys-subsystem-net-devices-{r.netdev}.device" for r in ports)
    starts = "".join(f"ExecStart={c}\n" for r in ports for c in rdma_ops.roce_settings(r))
    return (
        "[Unit]\n"
        "Description=gpufleet RoCE netdev MTU, DSCP trust and PFC (from the node plan)\n"
        f"Requires={devices}\nAfter={devices}\n"
        "Before=network-online.target\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"{starts}"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


@deploy("storage: RAID6, filesystems, mounts")
def storage(plan: NodePlan) -> None:
    for array in plan.raid:
        raid_ops.raid6(name=f"RAID6 {array.device}", array=array)
        # Debian's mdadm ships the monthly check as timers; they only need to be on.
        systemd.service(name="RAID check timer", service="mdcheck_start.timer", running=True, enabled=True)
    for m in plan.mounts:
        files.line(
            name=f"fstab {m.path}",
            path="/etc/fstab",
            line=f"^{m.device} {m.path} ",
            replace=f"{m.device} {m.path} {m.fstype} {m.options} 0 2",
        )
        server.mount(name=f"mount {m.path}", path=m.path, device=m.device, fs_type=m.fstype)


@deploy("perf probe environment")
def perf_env(plan: NodePlan) -> None:
    if plan.perf_env is not None:
        perf_ops.probe_env(name=f"venv {plan.perf_env.path} ({plan.perf_env.requirement})", env=plan.perf_env)


@deploy("services")
def services(plan: NodePlan, driver_loaded: bool) -> None:
    running = set(nvidia_ops.now(plan.services, driver_loaded))
    for name in plan.services:
        # Enabled either way: what needs the driver starts at the boot that loads it.
        systemd.service(name=f"service {name}", service=name, running=name in running or None, enabled=True)


@deploy("RDMA ports")
def rdma(plan: NodePlan) -> None:
    for p in plan.rdma:
        rdma_ops.rdma_port(name=f"RDMA {p.device}/{p.port}", planned=p)
    if any(p.roce for p in plan.rdma):
        systemd.service(name=f"service {ROCE_UNIT}", service=ROCE_UNIT, running=True, enabled=True)


@deploy("gpufleet node")
def node() -> None:
    """Everything one node must be, from its plan in host data."""
    plan = node_plan()
    managed = managed_files(plan)
    packages(plan, managed)
    perf_env(plan)
    # Read once for modules and services: whether an NVIDIA module runs now.
    driver_loaded = (
        bool(nvidia_ops.driver_pin(plan.packages)) and host.get_fact(NvidiaLoadedDriver) is not None
    )
    configuration(plan, managed, driver_loaded)
    storage(plan)
    services(plan, driver_loaded)
    if plan.rdma:
        rdma(plan)
