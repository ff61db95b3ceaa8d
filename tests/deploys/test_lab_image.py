"""The lab mirror's package resolution: apt-get's simulation lines -> the archive files to index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.lab.hosts import lab_packages, netns, veth
from gpufleet.lab.image import LabError, _deb_name
from gpufleet.lab.paths import LabPaths
from gpufleet.model.errors import InputError


@pytest.mark.parametrize(
    ("line", "deb"),
    [
        (
            "Inst ceph-osd (16.2.15+ds-0+deb12u2 Debian:12.12/stable [amd64])",
            "ceph-osd_16.2.15+ds-0+deb12u2_amd64.deb",
        ),
        (
            "Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])",
            "libssl3_3.0.17-1~deb12u2_amd64.deb",
        ),
        ("Inst python3-apt (2.6.0 Debian:12.12/stable [amd64]) []", "python3-apt_2.6.0_amd64.deb"),
        ("Inst tzdata (2025b-0+deb12u1 Debian:12.12/stable [all])", "tzdata_2025b-0+deb12u1_all.deb"),
        ("Inst perl (5.36.0-7+deb12u2 Debian:12.12/stable [amd64])", "perl_5.36.0-7+deb12u2_amd64.deb"),
        (
            "Inst openssh-server (1:9.2p1-2+deb12u10 Debian:12.12/stable [amd64])",
            "openssh-server_1%3a9.2p1-2+deb12u10_amd64.deb",
        ),
    ],
)
def test_simulated_install_line_names_the_archive(line: str, deb: str) -> None:
    assert _deb_name(line) == deb


def test_unexpected_line_is_an_error() -> None:
    with pytest.raises(LabError, match="unexpected apt-get simulation line"):
        _deb_name("Conf ceph-osd (16.2.15 Debian:12.12/stable [amd64])")


def test_mirror_carries_what_the_lab_plans_install_and_no_kubeadm() -> None:
    names = lab_packages(load_inventory("lab"))
    assert {"ceph-mon", "ceph-osd", "ceph-mgr", "ceph-common", "chrony", "containerd", "python3-apt"} <= set(
        names
    )
    assert "kubeadm" not in names  # Debian ships none; the lab's Kubernetes runs in check mode


@pytest.mark.parametrize("lab", ["gf", "gft", "ab12"])
def test_kernel_names_fit_the_limit_and_stay_apart_within_and_across_labs(lab: str) -> None:
    paths = replace(LabPaths.default(), name=lab)
    other = replace(paths, name="zz")
    hosts = ("lab-st1", "storage-node-01", "storage-node-02")
    names = [f(p, h) for p in (paths, other) for f in (netns, veth) for h in hosts]
    assert netns(paths, "lab-st1") == f"{lab}-lab-st1" and veth(paths, "lab-st1") == f"{lab}v-lab-st1"
    assert all(len(n) <= 15 for n in [*names, paths.bridge]) and len(set(names)) == len(names)
    assert paths.bridge != other.bridge and paths.cgroup != other.cgroup


def test_a_lab_name_that_cannot_prefix_an_interface_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_LAB_NAME", "gpufleet")
    with pytest.raises(InputError, match="GPUFLEET_LAB_NAME"):
        LabPaths.default()
