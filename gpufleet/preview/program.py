"""Run the Pulumi program of one stack under mocks and record the whole resource graph.

The Pulumi engine and provider plugins cannot run here: `pulumi.runtime.set_mocks` stands in for
the engine, and a recording monitor keeps every registration as the engine would receive it (type,
name, parent, dependencies, provider, inputs with secrets still marked). The program is the real
`stacks/__main__.py`, given the stack's config as the engine gives it.
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as pulumi_config
import pulumi.runtime.settings as pulumi_settings
from google.protobuf import json_format  # type: ignore[import-untyped]
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks, set_mocks
from pulumi.runtime.stack import run_pulumi_func

from gpufleet.inventory.load import REPO_ROOT, display, read_yaml, validate
from gpufleet.model.stack import StackFile

PROGRAM = REPO_ROOT / "stacks" / "__main__.py"
SECRET = "[secret]"
# Inputs that change with the serialized provider code, not with what is declared.
VOLATILE = {"__provider"}
PROJECT = "gpufleet"
# What `pulumi.get_organization()` answers on a self-managed backend (file://, S3).
ORGANIZATION = "organization"
ACCOUNT = "123456789012"
# Pulumi's wire signatures (sdk/go/common/resource/sig): how a secret, a resource reference
# and an unknown travel inside a registration.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class Secret:
    """A value the program marked secret: rendering shows `[secret]`, never the value."""

    value: Any

    def __repr__(self) -> str:
        return "Secret([secret])"


@dataclass(frozen=True)
class ResourceRef:
    urn: str


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    inputs: dict[str, Any]
    dependencies: list[str]
    provider: str
    additional_secret_outputs: list[str]
    # "register", or "read" for a resource the program only reads (a StackReference).
    operation: str = "register"
    # Input paths `pulumi up` leaves as they are (ResourceOptions.ignore_changes).
    ignore_changes: list[str] = field(default_factory=list)


@dataclass
class Graph:
    stack: str
    resources: list[Registration]
    outputs: dict[str, Any]  # secret exports as Secret

    def by_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def get(self, urn: str) -> Registration:
        return next(r for r in self.resources if r.urn == urn)


def unwrap(value: Any) -> Any:
    """Struct JSON from the wire → Python, keeping secrets and references visible as markers."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return Secret(unwrap(value.get("value")))
        if sig == RESOURCE_SIG:
            return ResourceRef(str(value.get("urn")))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def reveal(value: Any) -> Any:
    """The value with secrets opened: for the mocks, which stand where the engine decrypts."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


class RecordingMonitor(MockMonitor):
    """Keeps each registration as sent, in order; the mock engine answers as before.

    Only what the program sent is kept: the mock engine's answers hold secrets in the clear, as
    the real engine's state does before it encrypts them.
    """

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = unwrap(json_format.MessageToDict(request.object))
            self.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    parent=request.parent,
                    inputs=inputs,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self.registrations.append(
            Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=True,
                parent=request.parent,
                inputs=unwrap(json_format.MessageToDict(request.properties)),
                dependencies=list(request.dependencies),
                provider=request.provider,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                operation="read",
            )
        )
        return response


class EngineMocks(Mocks):
    """What the engine and providers would answer, computed from the inputs alone.

    Cloud resources get the identifiers AWS would assign; the dynamic cluster resources get the
    outputs their playbooks export (fsid, keys, kubeconfig); a StackReference gets the recorded
    outputs of the stack it names.
    """

    def __init__(self, stack: str, references: dict[str, dict[str, Any]]) -> None:
        self.stack = stack
        self.references = references

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs: dict[str, Any] = dict(args.inputs)
        ident = hashlib.sha256(f"{self.stack}/{args.typ}/{args.name}".encode()).hexdigest()[:17]
        if args.typ == "pulumi:pulumi:StackReference":
            name = str(inputs["name"])
            if name not in self.references:
                raise KeyError(f"StackReference to {name}: no recorded outputs for it")
            outputs = self.references[name]
            secret = sorted(k for k, v in outputs.items() if isinstance(v, Secret))
            return name, {"name": name, "outputs": reveal(outputs), "secretOutputNames": secret}
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            arn = f"arn:aws:{service}:us-east-1:{ACCOUNT}:{args.name}"
            extra: dict[str, Any] = {"arn": arn}
            if args.typ == "aws:sqs/queue:Queue":
                extra["url"] = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{args.name}"
            if args.typ in (
                "aws:autoscaling/group:Group",
                "aws:iam/role:Role",
                "aws:iam/instanceProfile:InstanceProfile",
            ):
                extra["name"] = inputs.get("name") or args.name
            if args.typ == "aws:s3/bucket:Bucket":
                # AWS appends a unique suffix to the prefix; bucket ARNs carry no region or account.
                extra["bucket"] = inputs.get("bucket") or f"{inputs.get('bucketPrefix', '')}{ident}"
                extra["arn"] = f"arn:aws:s3:::{extra['bucket']}"
            if args.typ == "aws:imagebuilder/image:Image":
                # What Image Builder reports once the build is distributed: the AMI in the region.
                extra["outputResources"] = [{"amis": [{"image": f"ami-{ident}", "region": "us-east-1"}]}]
            return f"{service}-{ident}", {**inputs, **extra}
        if args.typ.startswith("pulumi-python:dynamic/gpufleet:"):
            return f"{args.name}-{ident}", {**inputs, **_playbook_outputs(args.typ, args.name, inputs)}
        return f"{args.name}-{ident}", inputs

    def call(self, args: Any) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        raise NotImplementedError(f"the program made an unexpected invoke: {args.token}")


def _playbook_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if typ.endswith(":CephCluster"):
        return {
            "fsid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            **{
                key: "AQ" + hashlib.sha256(f"{name}/{key}".encode()).hexdigest()[:38] + "=="
                for key in ("client_key", "cephfs_client_key")
            },
        }
    if typ.endswith(":KubernetesCluster"):
        endpoint = inputs["spec"]["control_plane_endpoint"]
        return {
            "kubeconfig": (
                "apiVersion: v1\nkind: Config\nclusters:\n- name: gpufleet\n"
                f"  cluster: {{server: 'https://{endpoint}'}}\n"
                "users:\n- name: admin\n  user: {token: mock-admin-token}\n"
                "contexts:\n- name: admin\n  context: {cluster: gpufleet, user: admin}\ncurrent-context: admin\n"
            ),
            "join_token": "abcdef." + hashlib.sha256(name.encode()).hexdigest()[:16],
            "ca_cert_hash": "sha256:" + hashlib.sha256(endpoint.encode()).hexdigest(),
        }
    if typ.endswith(":Node"):
        return {"changed": [], "drift": []}
    return {}


def stack_config(stack: str, stacks_dir: Path) -> dict[str, Any]:
    """The stack file's config, as the engine hands it to the program (values as strings).

    An encrypted (`secure:`) value cannot be opened offline: the program gets `[secret]`.
    """
    given = stack_file_config(stack, stacks_dir)
    # The engine adds the project's defaults for keys the stack leaves unset.
    merged = {**_project_defaults(stacks_dir.parent / "Pulumi.yaml"), **given}
    return {k: _config_value(v) for k, v in merged.items()}


def stack_file_config(stack: str, stacks_dir: Path) -> dict[str, Any]:
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    return validate(StackFile, read_yaml(path), display(path)).config


# This harness also drives older trees (`gpufleet plan --base`): it imports only what every ref has,
# so the engine's defaulting and StackReference naming are written out here.
def _project_defaults(project_file: Path) -> dict[str, Any]:
    """What the engine adds for project keys a stack leaves unset."""
    project = read_yaml(project_file)
    out = {}
    for key, decl in (project.get("config") or {}).items():
        if isinstance(decl, dict) and decl.get("default") is not None:
            out[key if ":" in key else f"{project['name']}:{key}"] = decl["default"]
    return out


def _config_value(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"secure"}:
        return SECRET
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else str(value)


def evaluate(
    stack: str,
    *,
    config: dict[str, Any] | None = None,
    references: dict[str, dict[str, Any]] | None = None,
    program: Path = PROGRAM,
) -> Graph:
    """Run `program` for `stack` under mocks; `config` defaults to the stack file's."""
    cfg = config if config is not None else stack_config(stack, program.parent)
    mocks = EngineMocks(stack, references or {})
    monitor = RecordingMonitor(mocks)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_settings.ROOT.set(None)
        pulumi_config.set_all_config({k: str(v) for k, v in cfg.items()}, [])
        set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, organization=ORGANIZATION
        )
        settings = pulumi_settings.SETTINGS
        settings.rpc_manager.clear()
        settings.outputs.clear()
        root = pulumi_settings.get_root_resource()

        def run() -> None:
            runpy.run_path(str(program), run_name="__main__")

        loop.run_until_complete(run_pulumi_func(run))
        exports: dict[str, Any] = getattr(root, "outputs", {})
        outputs = loop.run_until_complete(_resolve_outputs(dict(exports)))
    finally:
        pulumi_settings.ROOT.set(None)
        asyncio.set_event_loop(None)
        loop.close()
    return Graph(stack=stack, resources=monitor.registrations, outputs=outputs)


async def _resolve_outputs(exports: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in exports.items():
        output = pulumi.Output.from_input(value)
        resolved = await output.future()
        out[key] = Secret(resolved) if await output.is_secret() else resolved
    return out


def evaluate_stack(stack: str, program: Path = PROGRAM) -> Graph:
    """Evaluate `stack`; a stack that references another (burst → on-prem) gets that stack's outputs."""
    cfg = stack_config(stack, program.parent)
    references: dict[str, dict[str, Any]] = {}
    onprem = cfg.get("gpufleet:onpremStack")
    if onprem:
        # As the program names it: a bare stack lives in the burst stack's organization and project.
        name = onprem if onprem.count("/") == 2 else f"{ORGANIZATION}/{PROJECT}/{onprem}"
        references[name] = evaluate_stack(name.rsplit("/", 1)[-1], program).outputs
    return evaluate(stack, config=cfg, references=references, program=program)


def masked(value: Any) -> Any:
    """JSON-ready, with every secret value replaced by `[secret]`, leaf by leaf: a secret map keeps
    its keys and shape, so a masked Kubernetes object is still a valid object."""
    if isinstance(value, Secret):
        return _mask_leaves(value.value)
    if isinstance(value, ResourceRef):
        return value.urn
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def _mask_leaves(value: Any) -> Any:
    if isinstance(value, Secret):
        return _mask_leaves(value.value)
    if isinstance(value, dict):
        return {k: _mask_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(v) for v in value]
    return SECRET


def graph_json(graph: Graph) -> dict[str, Any]:
    return {
        "stack": graph.stack,
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "custom": r.custom,
                "parent": r.parent,
                "provider": r.provider,
                "dependencies": sorted(r.dependencies),
                "inputs": masked({k: v for k, v in r.inputs.items() if k not in VOLATILE}),
            }
            for r in sorted(graph.resources, key=lambda r: r.urn)
        ],
        "outputs": masked(graph.outputs),
    }
