"""GPU part: driver, GPUs, health, CUDA, NCCL, container toolkit — against the BOM and inventory."""

from __future__ import annotations

import pytest

from gpufleet.plan.expect import GpuExpect, HostExpect
from gpufleet.verify.parse import (
    SMI_QUERY,
    Gpu,
    active_slowdowns,
    parse_driver_version,
    parse_key_values,
    parse_smi_q,
    parse_smi_query,
    parse_xids,
    version_matches,
)
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def want(expect: HostExpect) -> GpuExpect:
    if expect.gpu is None:
        not_planned("GPUs")
    assert expect.gpu is not None
    return expect.gpu


@pytest.fixture(scope="module")
def gpus(run: Run, want: GpuExpect) -> list[Gpu]:
    return parse_smi_query(run(SMI_QUERY))


def test_driver_loaded_at_the_bom_version(run: Run, want: GpuExpect) -> None:
    version, open_module = parse_driver_version(run("cat /proc/driver/nvidia/version"))
    assert version == want.driver_version, f"driver: expected {want.driver_version}, found {version}"
    assert open_module == want.open_kernel_module, (
        f"kernel module: expected {'open' if want.open_kernel_module else 'proprietary'}, "
        f"found {'open' if open_module else 'proprietary'}"
    )


def test_gpu_count_and_model(gpus: list[Gpu], want: GpuExpect) -> None:
    names = [g.name for g in gpus]
    assert len(gpus) == want.count, (
        f"GPUs: expected {want.count}x {want.smi_name}, found {len(gpus)}: {names}"
    )
    assert set(names) == {want.smi_name}, f"GPU model: expected {want.smi_name}, found {sorted(set(names))}"
    assert {g.driver_version for g in gpus} == {want.driver_version}


def test_persistence_mode_on(gpus: list[Gpu], want: GpuExpect) -> None:
    off = [g.index for g in gpus if not g.persistence]
    assert not off, f"persistence mode: expected Enabled on every GPU, found Disabled on {off}"


def test_ecc_enabled_without_uncorrectable_errors(gpus: list[Gpu], want: GpuExpect) -> None:
    assert all(g.ecc_enabled for g in gpus), f"ECC: expected Enabled, found {[g.ecc_enabled for g in gpus]}"
    errors = {g.index: g.ecc_uncorrected_volatile for g in gpus if g.ecc_uncorrected_volatile}
    assert not errors, f"uncorrectable volatile ECC errors: expected 0, found {errors}"


def test_no_pending_retirement_or_remap_failure(gpus: list[Gpu], want: GpuExpect) -> None:
    for g in gpus:
        if want.remaps_rows:
            assert g.remapped_rows_failure is False, (
                f"GPU {g.index}: row remapping failure {g.remapped_rows_failure}"
            )
            assert g.remapped_rows_pending is False, f"GPU {g.index}: row remap pending (reset the GPU)"
        else:
            assert g.retired_pages_pending is False, f"GPU {g.index}: page retirement pending (reboot)"


def test_no_xid_in_kernel_log(run: Run, want: GpuExpect) -> None:
    xids = parse_xids(run("dmesg"))
    assert not xids, f"Xid errors: expected none, found {[line for _, _, line in xids][:5]}"


def test_power_limit_and_clocks_sane(run: Run, gpus: list[Gpu], want: GpuExpect) -> None:
    for g in gpus:
        assert g.power_limit_w is not None and g.power_limit_w >= want.min_power_limit_w, (
            f"GPU {g.index} power limit: expected >= {want.min_power_limit_w:.0f} W, found {g.power_limit_w}"
        )
        assert g.max_sm_clock_mhz, f"GPU {g.index}: no max SM clock reported"
    slow = active_slowdowns(parse_smi_q(run("nvidia-smi -q -d PERFORMANCE")))
    assert not any(slow.values()), f"clock slowdowns active: {slow}"


def test_cuda_driver_version_covers_the_bom(run: Run, want: GpuExpect) -> None:
    found = parse_key_values(run("nvidia-smi --version")).get("CUDA Version", "")
    as_tuple = tuple(int(x) for x in found.split(".")) if found else (0,)
    assert as_tuple >= tuple(int(x) for x in want.cuda.split(".")), (
        f"CUDA driver API: expected >= {want.cuda}, found {found or 'none'}"
    )


def test_nccl_library_at_the_bom_version(run: Run, want: GpuExpect) -> None:
    version = run(f"dpkg-query -W -f '${{Version}}' {want.nccl_package}").strip()
    assert version_matches(want.nccl_version, version), (
        f"{want.nccl_package}: expected {want.nccl_version}, found {version}"
    )
    upstream = version.split("-")[0]
    libs = run("ldconfig -p")
    assert "libnccl.so.2 " in libs, "libnccl.so.2 is not in the linker cache"
    files = run("ls /usr/lib/x86_64-linux-gnu/")
    assert f"libnccl.so.{upstream}" in files.split(), f"libnccl.so.{upstream} is not installed"


def test_container_toolkit_configured(run: Run, want: GpuExpect) -> None:
    if want.container_toolkit is None:
        not_planned("NVIDIA container toolkit")
    version = run("nvidia-ctk --version")
    assert want.container_toolkit in version, (
        f"nvidia-ctk: expected {want.container_toolkit}, found {version!r}"
    )
    config = run("cat /etc/containerd/config.toml")
    assert "runtimes.nvidia" in config and "nvidia-container-runtime" in config, (
        "containerd has no nvidia runtime: expected `nvidia-ctk runtime configure --runtime=containerd`"
    )
