"""Which faults take a node out: DCGM exporter scrapes and kernel logs built on recorded outputs."""

from __future__ import annotations

from pathlib import Path

from gpufleet.remediate.faults import FATAL_XIDS, Fault, faults_from_dcgm, faults_from_kernel_log

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCRAPE = (FIXTURES / "dcgm" / "exporter-a100.prom").read_text()
NODE = "vks-cluster-0-0-np1-worker-xtxww-xw4wp-wn7j2"
LABELS = SCRAPE.split("DCGM_FI_DEV_SM_CLOCK{", 1)[1].split("}", 1)[0]


def _with_xid(xid: int) -> str:
    return SCRAPE.replace('err_code="0",err_msg="No Error"} 0', f'err_code="{xid}",err_msg="x"}} {xid}')


def _extra(name: str, help_text: str, kind: str, value: int) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name}{{{LABELS}}} {value}\n"


def test_a_healthy_scrape_has_no_fault() -> None:
    assert faults_from_dcgm(SCRAPE) == []


def test_fatal_xids_from_dcgm_name_the_node_and_gpu() -> None:
    for xid in FATAL_XIDS:
        assert faults_from_dcgm(_with_xid(xid)) == [Fault(NODE, "0", "xid", f"Xid {xid} ({FATAL_XIDS[xid]})")]
    # An application's own fault (Xid 13, 31, 43) is the job's, not the node's.
    assert faults_from_dcgm(_with_xid(31)) == faults_from_dcgm(_with_xid(13)) == []


def test_uncorrectable_ecc_and_row_remap_failure_from_dcgm() -> None:
    scrape = SCRAPE + _extra(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", "counter", 2
    )
    scrape += _extra("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed", "gauge", 1)
    assert [(f.kind, f.detail) for f in faults_from_dcgm(scrape)] == [
        ("ecc", "2 uncorrectable (double-bit) ECC errors"),
        ("row-remap", "row remapping failed"),
    ]
    zero = SCRAPE + _extra(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed", "gauge", 0
    )
    assert faults_from_dcgm(zero) == []


def test_fatal_xids_from_the_kernel_log() -> None:
    # The H200 machine's real kernel log has no Xid; the lines added are in the driver's own format.
    real = (FIXTURES / "h200x2" / "dmesg-nvrm.txt").read_text()
    assert faults_from_kernel_log("gpu01", real) == []
    log = real + (
        "[ 5120.418112] NVRM: Xid (PCI:0000:00:07): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
        "[ 5121.000001] NVRM: Xid (PCI:0000:00:06): 13, pid=4242, name=python3, Graphics SM Warp Exception\n"
        "[ 5122.117310] NVRM: Xid (PCI:0000:00:06): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error\n"
    )
    assert faults_from_kernel_log("gpu01", log) == [
        Fault("gpu01", "PCI:0000:00:06", "xid", "Xid 48 (double-bit ECC error)"),
        Fault("gpu01", "PCI:0000:00:07", "xid", "Xid 79 (GPU has fallen off the bus)"),
    ]
