"""Trace loading (both public formats), bad traces, surge parsing and application."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.model.errors import InputError
from gpufleet.sim.trace import (
    Request,
    Surge,
    Trace,
    apply_surges,
    cover,
    horizon,
    load_trace,
    parse_surge,
    repeat,
)
from tests.conftest import REPO

DATA = REPO / "bench" / "burst" / "data"
CSV_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_bundled_traces_load_into_one_stream() -> None:
    azure = load_trace(DATA / "azure_llm_2023_code.csv")
    mooncake = load_trace(DATA / "mooncake_synthetic.jsonl")
    # Row counts from the traces' README; every row becomes one request.
    assert len(azure.requests) == 8819
    assert len(mooncake.requests) == 3993
    for trace in (azure, mooncake):
        arrivals = [r.arrival_s for r in trace.requests]
        assert arrivals[0] == 0.0
        assert arrivals == sorted(arrivals)
    assert 3000 < azure.duration_s < 3600
    assert mooncake.duration_s == pytest.approx(1022.025)


def test_csv_times_are_utc_with_seven_digit_fractions(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV_HEADER + "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:05.0319600,3180,8\n")
    trace = load_trace(path)
    assert trace.requests == (Request(0.0, 4808, 10), Request(pytest.approx(1.052), 3180, 8))


def test_jsonl_milliseconds_become_seconds(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 2500, "input_length": 10, "output_length": 2, "hash_ids": [1]},
        {"timestamp": 500, "input_length": 7, "output_length": 1, "hash_ids": []},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_trace(path).requests == (Request(0.0, 7, 1), Request(2.0, 10, 2))


BAD = [
    ("a.csv", "TIME,ContextTokens,GeneratedTokens\n1,2,3\n", "a.csv:1: expected header"),
    (
        "a.csv",
        CSV_HEADER + "2023-11-16 18:17:03.1,12,x\n",
        "a.csv:2: GeneratedTokens: not a token count (got 'x')",
    ),
    (
        "a.csv",
        CSV_HEADER + "2023-11-16 18:17:03.1,-4,1\n",
        "a.csv:2: ContextTokens: not a token count (got '-4')",
    ),
    ("a.csv", CSV_HEADER + "yesterday,1,1\n", "a.csv:2: TIMESTAMP: not a YYYY-MM-DD HH:MM:SS.fffffff time"),
    ("a.csv", CSV_HEADER + "2023-11-16 18:17:03.1,1\n", "a.csv:2: expected 3 fields (got 2)"),
    ("a.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{oops\n', "a.jsonl:2: not JSON"),
    ("a.jsonl", '{"timestamp": 0, "output_length": 1}\n', "a.jsonl:1: input_length: required key is missing"),
    ("a.jsonl", '{"timestamp": 0, "input_length": "9", "output_length": 1}\n', "a.jsonl:1: input_length: "),
    ("a.jsonl", '{"timestamp": -1, "input_length": 1, "output_length": 1}\n', "a.jsonl:1: timestamp: "),
    (
        "a.jsonl",
        '{"timestamp": 0, "input_length": 1, "output_length": 1, "x": 2}\n',
        "a.jsonl:1: x: unknown key",
    ),
    # Found by the attacker review: each of these hung the simulator, or raised through the CLI.
    ("a.jsonl", "[" * 100_000 + "\n", "a.jsonl:1: not JSON: nested"),
    (
        "a.jsonl",
        '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
        '{"timestamp": 1e308, "input_length": 1, "output_length": 1}\n',
        "a.jsonl: trace spans ",
    ),
    (
        "a.jsonl",
        '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
        '{"timestamp": Infinity, "input_length": 1, "output_length": 1}\n',
        "a.jsonl:2: timestamp: ",
    ),
    ("a.csv", CSV_HEADER + "0001-01-01 00:00:00,1,1\n9999-12-31 23:59:59,1,1\n", "a.csv: trace spans "),
    ("a.csv", CSV_HEADER + "2023-11-16 18:17:03.1,1,1\n", "a.csv: trace spans no time"),
    ("a.csv", CSV_HEADER + "2023-11-16 18:17:03.1,1,1\n" * 3, "a.csv: trace spans no time"),
    ("a.jsonl", "\n\n", "a.jsonl: trace is empty"),
    ("a.csv", CSV_HEADER, "a.csv: trace has no requests"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD, ids=[b[2] for b in BAD])
def test_bad_trace_names_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as caught:
        load_trace(Path(name))
    assert len(caught.value.lines()) == 1
    assert caught.value.lines()[0].startswith(expected)


def test_bad_trace_on_the_command_line_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.jsonl").write_text(
        '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{"timestamp": 1, "output_length": 1}\n'
    )
    result = CliRunner().invoke(app, ["burst", "simulate", "--trace", "t.jsonl", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["t.jsonl:2: input_length: required key is missing"]


def test_missing_trace_file() -> None:
    result = CliRunner().invoke(app, ["burst", "simulate", "--trace", "/nonexistent/t.csv"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "/nonexistent/t.csv: file not found"


@pytest.mark.parametrize(
    ("text", "surge"),
    [
        ("3@20m:20m", Surge(3.0, 1200.0, 1200.0)),
        ("1.5@90s:10m", Surge(1.5, 90.0, 600.0)),
        ("2@0:1h", Surge(2.0, 0.0, 3600.0)),
        ("0.5@30:45", Surge(0.5, 30.0, 45.0)),
    ],
)
def test_surge_syntax(text: str, surge: Surge) -> None:
    assert parse_surge(text) == surge


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3x@20m:20m", "FACTOR is not a number"),
        ("3@20m", "expected FACTOR@START:DURATION"),
        ("3@20q:1m", "not a duration"),
        ("3@1m:0", "DURATION must be positive"),
        ("0@1m:1m", "FACTOR must be in"),
    ],
)
def test_bad_surge(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_surge(text)
    trace = Path(__file__).resolve().parents[2] / "bench" / "burst" / "data" / "mooncake_synthetic.jsonl"
    result = CliRunner().invoke(app, ["burst", "simulate", "--trace", str(trace), "--surge", text])
    assert result.exit_code == 2
    assert result.stderr.startswith("--surge: ")
    assert len(result.stderr.strip().splitlines()) == 1


def _steady(rate: float, seconds: int) -> Trace:
    return Trace("steady", tuple(Request(i / rate, 100, 10) for i in range(int(rate * seconds))))


def test_surge_multiplies_the_arrival_rate_inside_its_window_only() -> None:
    trace = _steady(5.0, 600)
    surged = apply_surges(trace, [Surge(3.0, 200.0, 100.0)], seed=1)
    inside = [r for r in surged.requests if 200 <= r.arrival_s < 300]
    before = [r for r in surged.requests if r.arrival_s < 200]
    after = [r for r in surged.requests if r.arrival_s >= 300]
    assert len(inside) == 3 * 500
    assert len(before) == 1000
    assert len(after) == len([r for r in trace.requests if r.arrival_s >= 300])
    assert [r.arrival_s for r in surged.requests] == sorted(r.arrival_s for r in surged.requests)


def test_fractional_surge_is_right_on_average() -> None:
    surged = apply_surges(_steady(10.0, 1000), [Surge(1.5, 0.0, 1000.0)], seed=3)
    assert len(surged.requests) == pytest.approx(15000, rel=0.03)


def test_repeat_plays_back_to_back() -> None:
    trace = _steady(1.0, 10)
    twice = repeat(trace, 2)
    assert len(twice.requests) == 20
    assert twice.requests[10].arrival_s == pytest.approx(10.0)


def test_hours_replay_the_trace_end_to_end_and_cut_at_the_horizon() -> None:
    trace = Trace("t", tuple(Request(float(t), 10, 1) for t in range(0, 600, 10)))
    played = cover(trace, 1500.0)
    assert len(played.requests) == 150 and played.requests[-1].arrival_s < 1500
    assert [r.arrival_s for r in played.requests[60:62]] == [600.0, 610.0]
    assert horizon(trace, None) == 600.0 and horizon(trace, 2.0) == 7200.0
