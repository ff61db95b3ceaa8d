"""`gpufleet lab up|down|status`: the local hosts that stand in for the lab site's bare metal."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.inventory.load import load_inventory
from gpufleet.lab import hosts
from gpufleet.lab.image import LabError
from gpufleet.lab.paths import LabPaths
from gpufleet.model.site import Inventory
from gpufleet.progress import Lines

lab_app = typer.Typer(help="Local lab hosts (systemd-nspawn, a netns each, a signed local apt mirror).")
SiteOpt = Annotated[str, typer.Option("--site", help="the site whose nodes the lab builds")]


def _inventory(site: str) -> Inventory:
    from gpufleet.cli import bad_input

    with bad_input():
        return load_inventory(site)


def _paths() -> LabPaths:
    from gpufleet.cli import bad_input

    with bad_input():
        return LabPaths.default()


def _table(rows: list[hosts.HostStatus]) -> Table:
    table = Table("host", "address", "supervisor", "ssh", "systemd")
    for r in rows:
        table.add_row(
            r.hostname, r.address, str(r.supervisor_pid or "-"), "yes" if r.ssh else "no", r.systemd
        )
    return table


def lab_up(site: str = "lab") -> list[hosts.HostStatus]:
    """Bring the lab up, printing progress; raises LabError if this machine can't."""
    from gpufleet.cli import out

    inv, paths = _inventory(site), _paths()
    start = time.monotonic()
    with Lines(out) as lines:
        rows = hosts.up(inv, paths, lines)
    out.print(_table(rows))
    out.print(f"lab up in {time.monotonic() - start:.1f}s; ssh config: {paths.ssh_config}")
    return rows


@lab_app.command("up")
def up_cmd(site: SiteOpt = "lab") -> None:
    """Build the mirror and boot every host of the site; fails if the lab is already up."""
    from gpufleet.cli import err

    try:
        lab_up(site)
    except LabError as exc:
        err.print(f"[red]lab up failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@lab_app.command("down")
def down_cmd(site: SiteOpt = "lab") -> None:
    """Stop every host and remove what `lab up` created (caches of downloads stay)."""
    from gpufleet.cli import err, out

    inv, paths = _inventory(site), _paths()
    try:
        with Lines(out) as lines:
            hosts.down(inv, paths, lines)
    except LabError as exc:
        err.print(f"[red]lab down failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def diagnosis(inv: Inventory, paths: LabPaths, rows: list[hosts.HostStatus]) -> str | None:
    """One line: what of the lab is missing or left over, and the command that fixes it; None when
    every host runs and can be logged in to."""
    from gpufleet.provision.reach import lab_fix

    if not any(r.supervisor_pid for r in rows):
        left = hosts.leftovers(inv, paths)
        if left:
            state = (
                f"its state ({paths.state}) is gone" if not paths.state.exists() else "they are not running"
            )
            return (
                f"the lab's hosts are left over but {state} ({', '.join(left)}): {lab_fix(inv, rebuild=True)}"
            )
        return f"no lab host is running ({paths.state}): {lab_fix(inv, then_up=paths.state.exists())}"
    missing = hosts.missing_ssh(paths)
    if missing:
        names = ", ".join(str(p) for p in missing)
        return (
            f"the lab's hosts run, but nothing can log in to them: {names} "
            f"{'is' if len(missing) == 1 else 'are'} missing: {lab_fix(inv, rebuild=True)}"
        )
    down = [r.hostname for r in rows if r.systemd != "running"]
    if down:
        return f"not running: {', '.join(down)}: {lab_fix(inv, rebuild=True)}"
    return None


@lab_app.command("status")
def status_cmd(site: SiteOpt = "lab") -> None:
    """Each host's supervisor, SSH and systemd state. Exit 0 when every host runs and can be logged
    in to; 1 otherwise, with one line on stderr saying what is missing and the command that fixes
    it; 2 on bad input."""
    from gpufleet.cli import err, out

    inv, paths = _inventory(site), _paths()
    rows = hosts.status(inv, paths)
    out.print(_table(rows))
    problem = diagnosis(inv, paths, rows)
    if problem is not None:
        err.print(problem, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
