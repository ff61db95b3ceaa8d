"""Run tests/host against a site's hosts and collect one result per check and host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel

from gpufleet.inventory.load import REPO_ROOT, display, inventories_dir, load_inventory, site_file
from gpufleet.model.errors import InputError, Problem
from gpufleet.plan.expect import HostExpect
from gpufleet.provision.connection import testinfra_ssh_args
from gpufleet.provision.logs import log_file

PARTS = ("gpu", "network", "storage", "kubernetes", "perf")


class CheckResult(BaseModel):
    host: str
    check: str
    part: str
    outcome: str
    message: str


class VerifyReport(BaseModel):
    site: str
    hosts: list[str]
    results: list[CheckResult]
    returncode: int
    log: str = ""  # the host suite's whole output: what a one-line failure leaves out

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def ok(self) -> bool:
        # pytest's own failure (exit 2-4: usage, internal error, interrupted) is no pass either.
        return not self.failed and self.returncode in (0, 5) and bool(self.results)


def verify_site(
    site: str,
    limit: list[str] | None = None,
    parts: list[str] | None = None,
    *,
    local: bool = False,
    node_only: bool = False,
    timeout_s: float = 900,
    given: tuple[str, HostExpect] | None = None,
) -> VerifyReport:
    """Check `limit` (default: every node) of `site`; `local` checks this machine as the one host named.

    The hosts are checked one after another, each within `timeout_s`: a suite still running after
    `timeout_s` x hosts is stopped and reported as one failed check.

    `node_only` leaves out what needs the node's clusters (Kubernetes membership, Ceph health): the
    gate after a node's own deploy, which runs before the cluster playbooks join it.
    `given` (address, expectations) checks one host over SSH against expectations the caller holds
    (the Node provider's own inputs) instead of the inventory's."""
    if given is not None:
        site_name, names = site, [given[1].hostname]
    else:
        inv = load_inventory(site)
        site_name, names = inv.site.name, [n.hostname for n in inv.nodes]
    hosts = limit or names
    unknown = [h for h in hosts if h not in names]
    if unknown:
        raise InputError(
            "--limit", [Problem((), f"{', '.join(unknown)} not in site {site_name} ({', '.join(names)})")]
        )
    bad_parts = [p for p in parts or [] if p not in PARTS]
    if bad_parts:
        raise InputError(
            "--part", [Problem((), f"unknown part {', '.join(bad_parts)}; parts: {', '.join(PARTS)}")]
        )
    if local and len(hosts) != 1:
        raise InputError("--local", [Problem((), "checking this machine needs exactly one --limit HOST")])
    env = {
        **os.environ,
        # testinfra's Ansible backend runs `ansible-inventory` by name: this environment's first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "GPUFLEET_SITE": str(site_file(site).parent.name),
        "GPUFLEET_INVENTORIES": str(site_file(site).parent.parent.resolve()),
    }
    ssh_args: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if given is not None:
            expect_file = Path(tmp) / "expect.json"
            expect_file.write_text(given[1].model_dump_json())
            env["GPUFLEET_EXPECT"] = str(expect_file)
            target = f"--hosts=ssh://root@{given[0]}"
            ssh_args = testinfra_ssh_args(site_name)
        elif local:
            env["GPUFLEET_HOST"] = hosts[0]
            target = "--hosts=local://"
        else:
            target = "--hosts=" + ",".join(f"ansible://{h}" for h in hosts)
            ssh_args = testinfra_ssh_args(site_name)
        report_file = Path(tmp) / "report.json"
        args = [
            sys.executable,
            "-m",
            "pytest",
            str(REPO_ROOT / "tests" / "host"),
            target,
            *ssh_args,
            f"--ansible-inventory={inventories_dir().resolve() / 'ansible_inventory.py'}",
            "-p",
            "gpufleet.verify.report",
            f"--gpufleet-report={report_file}",
            "-q",
            "--no-header",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(REPO_ROOT),
        ]
        selected = f"({' or '.join(parts)})" if parts else ""
        if node_only:
            selected = f"{selected} and not cluster" if selected else "not cluster"
        if selected:
            args += ["-m", selected]
        limit_s = timeout_s * len(hosts)
        try:
            proc = subprocess.run(
                args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=limit_s
            )
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(args, 1, "", f"host suite stopped after {limit_s:g} s")
        log = log_file(site_name, "verify", "local" if local else "hosts")
        log.write_text(proc.stdout + proc.stderr)
        results = json.loads(report_file.read_text()) if report_file.exists() else []
    if not results:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        results = [
            {
                "host": ",".join(hosts),
                "check": "host suite",
                "part": "",
                "outcome": "failed",
                "message": " / ".join(tail) or f"pytest exited {proc.returncode}",
            }
        ]
    return VerifyReport(
        site=site_name,
        hosts=hosts,
        results=[CheckResult(**r) for r in results],
        returncode=proc.returncode,
        log=display(log),
    )
