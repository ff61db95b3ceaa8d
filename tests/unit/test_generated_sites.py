"""Property tests over generated sites: valid ones plan deterministically; corrupted ones fail cleanly."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.sitegen import generate_site
from gpufleet.inventory.load import inventory_from_data
from gpufleet.model.errors import InputError
from gpufleet.plan import plan_node, plan_site
from gpufleet.plan.node import READINESS_TAINT

SMALL = generate_site(12)


def _leaf_paths(doc: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaf_paths(v, (*prefix, k))] + [prefix]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaf_paths(v, (*prefix, i))] + [prefix]
    return [prefix]


PATHS = [p for p in _leaf_paths(SMALL) if p]

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=7, max_value=60))
def test_generated_sites_validate_and_plan_deterministically(size: int) -> None:
    doc = generate_site(size)
    inv = inventory_from_data(doc, "generated")
    first = plan_site(inv)
    again = plan_site(inventory_from_data(copy.deepcopy(doc), "generated"))
    assert first == again
    assert set(first.node_digests) == {n["hostname"] for n in doc["nodes"]}
    for node in inv.nodes:
        assert READINESS_TAINT in plan_node(inv, node).registration_taints


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), junk)
def test_any_corruption_is_an_input_error_naming_a_real_key(path: tuple[str | int, ...], value: Any) -> None:
    doc = copy.deepcopy(SMALL)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        inventory_from_data(doc, "generated.yaml")
    except InputError as exc:
        assert exc.problems
        for problem, line in zip(exc.problems, exc.lines(), strict=True):
            assert line.startswith("generated.yaml: ")
            assert "\n" not in line
            # Every reported key path exists in the document, but for its last key (a missing one).
            node: Any = doc
            walked = 0
            for key in problem.path:
                if (isinstance(node, dict) and key in node) or (
                    isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
                ):
                    node = node[key]
                else:
                    break
                walked += 1
            assert walked >= len(problem.path) - 1, line


def test_one_corruption_fails_at_its_path() -> None:
    doc = copy.deepcopy(SMALL)
    doc["nodes"][8]["nics"]["rdma"][2]["gid_index"] = -1
    try:
        inventory_from_data(doc, "g.yaml")
    except InputError as exc:
        assert [p.path for p in exc.problems] == [("nodes", 8, "nics", "rdma", 2, "gid_index")]
    else:
        raise AssertionError("a negative GID index was accepted")


def test_a_key_with_a_newline_stays_on_one_line() -> None:
    """Found by hypothesis: an unknown key holding a newline split the error line in two."""
    doc = copy.deepcopy(SMALL)
    doc["site"]["serving"]["bad\nkey"] = 0
    try:
        inventory_from_data(doc, "g.yaml")
    except InputError as exc:
        assert exc.lines() == ["g.yaml: site.serving['bad\\nkey']: unknown key"]
    else:
        raise AssertionError("an unknown key was accepted")
