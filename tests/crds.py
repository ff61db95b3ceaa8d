"""Custom resources checked against their upstream CRD schemas, as the API server checks them.

The CRDs are the upstream files in `../shared/k8s/crds/` (sources and licences in its README),
read in place, never copied here. Each version's `openAPIV3Schema` validates the object with
unknown fields as errors (the API server prunes them, and a strict server-side apply refuses
them) unless the schema says `x-kubernetes-preserve-unknown-fields`; types, required fields,
enums, patterns and bounds are checked by jsonschema. Not checked: CEL rules
(`x-kubernetes-validations`) and formats beyond what jsonschema knows.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.conftest import REPO

# CI clones the repository beside `shared/` (`<root>/main` and `<root>/shared`).
SHARED = next(
    (p for p in (REPO.parent / "shared", Path("/work/shared")) if (p / "k8s" / "crds").is_dir()),
    REPO.parent / "shared",
)
CRDS = SHARED / "k8s" / "crds"


@cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    out[key] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Unknown fields are errors wherever the schema lists its properties and keeps nothing else."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            if node.get("x-kubernetes-int-or-string"):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is `type: object` in every CRD: the API server checks it as ObjectMeta (below).
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def known_kinds() -> set[tuple[str, str]]:
    return set(_schemas())


def validate_custom(obj: dict[str, Any], kubernetes_version: str) -> None:
    """Raise (jsonschema or kubernetes_validate ValidationError) where the API server would refuse."""
    key = (obj["apiVersion"], obj["kind"])
    schemas = _schemas()
    if key not in schemas:
        raise LookupError(f"no CRD for {key} in {CRDS}")
    # No metaschema check: some CRD patterns are Go regexps (`^(?i)...`) Python reads differently;
    # they only apply to fields present, and none of ours carries one.
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schemas[key]).iter_errors(obj))
    if error is not None:
        raise error
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
        kubernetes_version,
        strict=True,
    )
