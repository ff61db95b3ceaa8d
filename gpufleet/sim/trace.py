"""LLM request traces: read the two public formats into one request stream, and add surges.

Formats (see bench/burst/data/NOTICE.md):
- CSV with header `TIMESTAMP,ContextTokens,GeneratedTokens` (Azure LLM inference trace 2023);
- JSON lines with `timestamp` (ms from start), `input_length`, `output_length`, `hash_ids` (Mooncake).

Bad input raises InputError whose source names the file and line and whose path names the key.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.inventory.load import display, read_text
from gpufleet.model.errors import InputError, Problem


@dataclass(frozen=True, order=True)
class Request:
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    requests: tuple[Request, ...]

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s if self.requests else 0.0


CSV_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# What a trace may span: the simulator's longest horizon (`--hours` is at most 24); at least a second,
# as a trace is replayed end to end to fill the horizon (one of no length never fills it).
MAX_TRACE_S = 24 * 3600.0
MIN_TRACE_S = 1.0


class _JsonlRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    timestamp: float = Field(
        ge=0, allow_inf_nan=False, description="milliseconds from the start of the trace"
    )
    input_length: int = Field(ge=0)
    output_length: int = Field(ge=0)
    hash_ids: list[int] | None = None


def load_trace(path: Path) -> Trace:
    source = display(path)
    text = read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise InputError(source, [Problem((), "trace is empty")])
    if path.suffix == ".csv" or (path.suffix not in {".jsonl", ".json"} and not first.startswith("{")):
        requests = _read_csv(text, source)
    else:
        requests = _read_jsonl(text, source)
    if not requests:
        raise InputError(source, [Problem((), "trace has no requests")])
    requests.sort()
    start = requests[0].arrival_s
    span = requests[-1].arrival_s - start
    if span < MIN_TRACE_S:
        raise InputError(
            source, [Problem((), "trace spans no time: its requests all arrive within a second")]
        )
    if span > MAX_TRACE_S:
        raise InputError(source, [Problem((), f"trace spans {span / 3600:.3g} h: at most 24 h")])
    return Trace(
        name=path.stem,
        requests=tuple(Request(r.arrival_s - start, r.input_tokens, r.output_tokens) for r in requests),
    )


def _read_csv(text: str, source: str) -> list[Request]:
    rows = csv.reader(text.splitlines())
    header = tuple(next(rows))
    if header != CSV_HEADER:
        raise InputError(
            f"{source}:1", [Problem((), f"expected header {','.join(CSV_HEADER)} (got {','.join(header)!r})")]
        )
    out: list[Request] = []
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        where = f"{source}:{lineno}"
        if len(row) != len(CSV_HEADER):
            raise InputError(where, [Problem((), f"expected {len(CSV_HEADER)} fields (got {len(row)})")])
        stamp, context, generated = row
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise InputError(
                where, [Problem(("TIMESTAMP",), f"not a YYYY-MM-DD HH:MM:SS.fffffff time (got {stamp!r})")]
            ) from None
        # The Azure trace's times are UTC without an offset: never read them as local time.
        arrival = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        out.append(
            Request(
                arrival, _count(context, where, "ContextTokens"), _count(generated, where, "GeneratedTokens")
            )
        )
    return out


def _count(value: str, where: str, key: str) -> int:
    if not re.fullmatch(r"[0-9]+", value.strip()):
        raise InputError(where, [Problem((key,), f"not a token count (got {value!r})")])
    return int(value)


def _read_jsonl(text: str, source: str) -> list[Request]:
    out: list[Request] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(where, [Problem((), f"not JSON: {exc.msg} at column {exc.colno}")]) from None
        except RecursionError:
            raise InputError(where, [Problem((), "not JSON: nested deeper than the parser goes")]) from None
        try:
            row = _JsonlRow.model_validate(data)
        except ValidationError as exc:
            problems = [Problem(tuple(e["loc"]), _pydantic_message(e)) for e in exc.errors()]
            raise InputError(where, problems) from None
        out.append(Request(row.timestamp / 1000.0, row.input_length, row.output_length))
    return out


def _pydantic_message(err: object) -> str:
    assert isinstance(err, dict)
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    value = err.get("input")
    suffix = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    return f"{err['msg']}{suffix}"


# --- surges --------------------------------------------------------------------------------

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smh]?)$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Surge:
    """Arrival rate times `factor` during [start_s, start_s + duration_s)."""

    factor: float
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration like 90s, 20m or 1h (got {text!r})")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_surge(text: str) -> Surge:
    """`FACTOR@START:DURATION`, e.g. `3@20m:20m`; a ValueError says what is wrong."""
    factor_text, at, window = text.partition("@")
    start_text, colon, duration_text = window.partition(":")
    if not at or not colon:
        raise ValueError(f"expected FACTOR@START:DURATION like 3@20m:20m (got {text!r})")
    try:
        factor = float(factor_text)
    except ValueError:
        raise ValueError(f"FACTOR is not a number (got {factor_text!r})") from None
    if not factor > 0 or factor > 100:
        raise ValueError(f"FACTOR must be in (0, 100] (got {factor_text!r})")
    duration = parse_duration(duration_text)
    if duration <= 0:
        raise ValueError(f"DURATION must be positive (got {duration_text!r})")
    return Surge(factor=factor, start_s=parse_duration(start_text), duration_s=duration)


# Copies land within this many seconds of the request they copy: close enough that the surge
# keeps the trace's own second-scale bursts, apart enough not to stack identical instants.
_JITTER_S = 2.0


def apply_surges(trace: Trace, surges: list[Surge], seed: int = 0) -> Trace:
    """Scale the arrival rate inside each surge window by sampling extra copies of its requests."""
    rng = random.Random(seed)
    out: list[Request] = []
    for request in trace.requests:
        factor = 1.0
        for surge in surges:
            if surge.start_s <= request.arrival_s < surge.end_s:
                factor *= surge.factor
        whole = int(factor)
        copies = whole + (1 if rng.random() < factor - whole else 0)
        for i in range(copies):
            if i == 0:
                out.append(request)
                continue
            window = next(s for s in surges if s.start_s <= request.arrival_s < s.end_s)
            t = request.arrival_s + rng.uniform(-_JITTER_S, _JITTER_S)
            t = min(max(t, window.start_s), window.end_s - 1e-3)
            out.append(Request(t, request.input_tokens, request.output_tokens))
    out.sort()
    return Trace(name=trace.name, requests=tuple(out))


def repeat(trace: Trace, times: int) -> Trace:
    """The trace played `times` times back to back, for traces shorter than a scaling episode."""
    if times <= 1:
        return trace
    period = trace.duration_s + (trace.duration_s / max(len(trace.requests) - 1, 1))
    return Trace(
        name=trace.name,
        requests=tuple(
            Request(r.arrival_s + k * period, r.input_tokens, r.output_tokens)
            for k in range(times)
            for r in trace.requests
        ),
    )


def cover(trace: Trace, horizon_s: float) -> Trace:
    """The trace played end to end as often as it takes to fill `horizon_s`, cut there."""
    period = trace.duration_s + (trace.duration_s / max(len(trace.requests) - 1, 1))
    times = max(1, math.ceil(horizon_s / max(period, 1e-9)))
    played = repeat(trace, times)
    return Trace(trace.name, tuple(r for r in played.requests if r.arrival_s < horizon_s))


def horizon(trace: Trace, hours: float | None) -> float:
    """`hours` hours, or the trace's own length in whole minutes."""
    if hours is not None:
        return hours * 3600.0
    return 60.0 * math.ceil(max(trace.duration_s, 1.0) / 60)
