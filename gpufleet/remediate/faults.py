"""Which GPU faults take a node out of service, read from DCGM exporter metrics or the kernel log. Pure.

A node with a fatal fault is cordoned, tainted unverified (the taint it registered with) and drained
through the eviction API, so the serving disruption budget holds; it returns only through a passing
admission gate (gpufleet.remediate). The Xids are those NVIDIA's Xid catalog says need the GPU reset
or the node drained: the GPU or its memory can no longer be trusted with a replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gpufleet.verify.parse import parse_xids

FATAL_XIDS: dict[int, str] = {
    48: "double-bit ECC error",
    63: "ECC page retirement or row remapping event",
    64: "ECC page retirement or row remapper failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
}

# dcgm-exporter's field names: the last Xid seen (a gauge holding the Xid's number), volatile
# double-bit (uncorrectable) ECC errors, and whether row remapping has failed.
DCGM_XID = "DCGM_FI_DEV_XID_ERRORS"
DCGM_ECC_DBE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
DCGM_ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"


@dataclass(frozen=True, order=True)
class Fault:
    node: str
    gpu: str  # the GPU index from DCGM, or its PCI address from the kernel log
    kind: str  # xid | ecc | row-remap
    detail: str

    @property
    def reason(self) -> str:
        return f"GPU {self.gpu}: {self.detail}"


def faults_from_dcgm(text: str, node_label: str = "Hostname") -> list[Fault]:
    """Faults in one dcgm-exporter scrape; each sample names its node by `node_label`."""
    faults = []
    # By family: the parser names a counter's samples with a `_total` suffix.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            node = sample.labels.get(node_label)
            if not node:
                continue
            gpu, value = sample.labels.get("gpu", "?"), sample.value
            if family.name == DCGM_XID and int(value) in FATAL_XIDS:
                xid = int(value)
                faults.append(Fault(node, gpu, "xid", f"Xid {xid} ({FATAL_XIDS[xid]})"))
            elif family.name == DCGM_ECC_DBE and value > 0:
                faults.append(Fault(node, gpu, "ecc", f"{value:.0f} uncorrectable (double-bit) ECC errors"))
            elif family.name == DCGM_ROW_REMAP_FAILURE and value > 0:
                faults.append(Fault(node, gpu, "row-remap", "row remapping failed"))
    return sorted(set(faults))


def faults_from_kernel_log(node: str, text: str) -> list[Fault]:
    """Fatal Xids in a node's kernel log (`dmesg`, `journalctl -k`)."""
    faults = {
        Fault(node, pci, "xid", f"Xid {xid} ({FATAL_XIDS[xid]})")
        for pci, xid, _ in parse_xids(text)
        if xid in FATAL_XIDS
    }
    return sorted(faults)


def by_node(faults: list[Fault]) -> dict[str, list[Fault]]:
    out: dict[str, list[Fault]] = {}
    for fault in faults:
        out.setdefault(fault.node, []).append(fault)
    return out
