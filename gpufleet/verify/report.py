"""pytest plugin: write each host check's outcome to a JSON file (`--gpufleet-report FILE`)."""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_KEY = pytest.StashKey[list[dict[str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpufleet-report", default=None, help="write host check results as JSON here")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        # testinfra parametrizes each test by its host, even when a fixture of it failed in setup.
        callspec = getattr(item, "callspec", None)
        host: Any = callspec.params.get("_testinfra_host") if callspec else None
        name = "?"
        if host is not None:
            local = host.backend.NAME == "local"
            name = os.environ.get("GPUFLEET_HOST", "local") if local else str(host.backend.get_hostname())
        message = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr)
        elif report.skipped and isinstance(report.longrepr, tuple):
            message = report.longrepr[2]
        item.config.stash[_KEY].append(
            {
                "host": name,
                "check": item.originalname if isinstance(item, pytest.Function) else item.name,
                "part": next(
                    (
                        m.name
                        for m in item.iter_markers()
                        if m.name in {"gpu", "network", "storage", "kubernetes", "perf"}
                    ),
                    "",
                ),
                "outcome": report.outcome,
                "message": message.splitlines()[0] if message else "",
            }
        )
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = session.config.getoption("--gpufleet-report")
    if target:
        Path(target).write_text(json.dumps(session.config.stash[_KEY], indent=2))
