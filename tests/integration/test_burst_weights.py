"""The burst model's weights: published once to S3, copied onto a burst node by its user data.

Against moto's S3 and SSM on 127.0.0.1 (moto_server, stopped by PID). The node side runs exactly
what a burst node runs: the fetch command line is taken from the burst stack's rendered user data,
and the scripts from the baked image's component document (what Image Builder writes into
/opt/gpufleet), executed standalone by a fresh interpreter, with a temporary directory standing
for /opt/dlami/nvme. The revision is a small safetensors model in the model cache's layout.

What moto cannot see: instance-store NVMe and its throughput (the budget's copy rate is an
estimate, docs/burst-boot.md); IAM scoping (moto authorises against "*": the node role's one
prefix is checked on the recorded graph, tests/components/test_burst_access.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from gpufleet.inventory.stacks import Stack, load_stack
from gpufleet.plan.aws import BURST_NVME, NODE_SCRIPTS, image_component, plan_burst
from gpufleet.serving import burst_weights
from gpufleet.serving.model_cache import MARKER
from gpufleet.serving.tritonserver import free_port
from tests.integration.servers import serving

pytestmark = pytest.mark.integration

REGION = "us-east-1"
SCRIPTS = Path(burst_weights.__file__).parent
PUBLISH = [sys.executable, "-m", "gpufleet.serving.burst_weights", "publish", "--region", REGION]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with serving(moto, f"{url}/moto-api/", tmp_path_factory.mktemp("moto") / "moto.log"):
        yield url


def aws(service: str, url: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=url, aws_access_key_id="t", aws_secret_access_key="t"
    )


def env(url: str) -> dict[str, str]:
    """The node's environment, with AWS's endpoint pointed at moto (the SDK's own variable)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {**keep, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}


def shard(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A safetensors file: little-endian header length, JSON header, the tensors' bytes."""
    header: dict[str, Any] = {}
    offset, data = 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def revision(folder: Path) -> Path:
    """A verified revision in the model cache's layout: two shards, their index, the marker."""
    folder.mkdir(parents=True)
    a, b = os.urandom(4 * 64 * 2), os.urandom(2 * 32 * 2)
    shard(folder / "model-00001-of-00002.safetensors", {"embed.weight": ("BF16", [4, 64], a)})
    shard(folder / "model-00002-of-00002.safetensors", {"lm_head.weight": ("BF16", [2, 32], b)})
    index = {
        "metadata": {"total_size": len(a) + len(b)},
        "weight_map": {
            "embed.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / MARKER).write_text("{}")
    return folder


@pytest.fixture(scope="module")
def stack() -> Stack:
    return load_stack("burst-prod")


def node_command(stack: Stack, opt: Path, nvme: Path) -> list[str]:
    """The weights step of the rendered user data, with its paths moved under the test's directories."""
    plan = plan_burst(stack.inventory, stack.config, "t")
    text = plan.user_data.replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if f"{NODE_SCRIPTS}/burst_weights.py" in x]
    argv = shlex.split(line)
    assert argv[:3] == ["python3", f"{NODE_SCRIPTS}/burst_weights.py", "fetch"]
    moved = [a.replace(NODE_SCRIPTS, str(opt)).replace(BURST_NVME, str(nvme)) for a in argv[1:]]
    # As the node runs it: `python3 <script>`, so the script's own directory (the baked model_cache.py) comes first.
    return [sys.executable, *moved]


def baked_scripts(stack: Stack, opt: Path) -> None:
    """The node scripts as the image component's CreateFile step writes them."""
    plan = plan_burst(stack.inventory, stack.config, "t")
    scripts = {f: (SCRIPTS / f).read_text() for f in ("model_cache.py", "burst_weights.py")}
    doc = yaml.safe_load(image_component(plan, scripts))
    (build,) = [phase for phase in doc["phases"] if phase["name"] == "build"]
    (step,) = [s for s in build["steps"] if s["action"] == "CreateFile"]
    opt.mkdir(parents=True, exist_ok=True)
    for item in step["inputs"]:
        assert item["path"].startswith(f"{NODE_SCRIPTS}/")
        (opt / Path(item["path"]).name).write_text(item["content"])


@pytest.fixture
def published(moto_url: str, stack: Stack, tmp_path: Path) -> dict[str, Any]:
    """A fresh bucket with the revision published by the publish command, and the node's parameter."""
    plan = plan_burst(stack.inventory, stack.config, "t")
    bucket = f"gpufleet-dc1-burst-{tmp_path.name.lower().replace('_', '-')[-20:]}"
    aws("s3", moto_url).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{plan.weights_prefix}"
    aws("ssm", moto_url).put_parameter(Name=plan.weights_parameter, Value=url, Type="String", Overwrite=True)
    cache = revision(tmp_path / "cache" / plan.weights_prefix)
    done = subprocess.run(
        [*PUBLISH, "--folder", str(cache), "--url", url],
        env=env(moto_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"burst weights: 4 files of {cache} published to {url}"
    opt, nvme = tmp_path / "opt-gpufleet", tmp_path / "nvme"
    baked_scripts(stack, opt)
    (nvme / "weights").mkdir(parents=True)  # the DLAMI mounts the instance store there
    dest = nvme / "weights" / plan.weights_prefix
    return {
        "bucket": bucket,
        "prefix": plan.weights_prefix,
        "cache": cache,
        "dest": dest,
        "opt": opt,
        "nvme": nvme,
    }


def run_node(stack: Stack, moto_url: str, p: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        node_command(stack, p["opt"], p["nvme"]),
        env=env(moto_url),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=p["nvme"],
    )


def test_a_good_copy_is_verified_and_marked(moto_url: str, stack: Stack, published: dict[str, Any]) -> None:
    # The baked script checks with the baked model_cache.py beside it, not with this checkout's package.
    probe = "import sys; sys.argv = ['x']; import burst_weights; print(burst_weights.verify.__module__)"
    which = subprocess.run(
        [sys.executable, "-c", probe], cwd=published["opt"], capture_output=True, text=True, timeout=60
    )
    assert which.stdout.strip() == "model_cache", which.stderr
    done = run_node(stack, moto_url, published)
    assert done.returncode == 0, done.stderr
    dest: Path = published["dest"]
    assert done.stdout.startswith(f"burst weights: {dest} verified (")
    cache: Path = published["cache"]
    for f in cache.iterdir():
        if f.name != MARKER:
            assert (dest / f.name).read_bytes() == f.read_bytes(), f.name
    marker = json.loads((dest / MARKER).read_text())
    assert marker["revision"] == cache.name and marker["from"].startswith(f"s3://{published['bucket']}/")
    assert not list(dest.glob("*.part"))
    # A second run (the node rebooted with its instance store intact) copies nothing again.
    again = run_node(stack, moto_url, published)
    assert again.returncode == 0 and "(0 bytes copied" in again.stdout


def test_a_corrupted_object_fails_the_node_with_one_line(
    moto_url: str, stack: Stack, published: dict[str, Any]
) -> None:
    s3 = aws("s3", moto_url)
    key = f"{published['prefix']}/model-00002-of-00002.safetensors"
    body = bytearray(s3.get_object(Bucket=published["bucket"], Key=key)["Body"].read())
    body[-1] ^= 0xFF  # same length, one tensor byte flipped: the index check alone would pass it
    s3.put_object(Bucket=published["bucket"], Key=key, Body=bytes(body))
    done = run_node(stack, moto_url, published)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("burst weights: model-00002-of-00002.safetensors: sha256 ")
    assert "differs from the manifest's" in line
    dest: Path = published["dest"]
    assert not (dest / MARKER).exists() and not list(dest.glob("*.part"))


def test_a_shard_that_does_not_match_its_index_fails(
    moto_url: str, stack: Stack, published: dict[str, Any]
) -> None:
    """A revision published wrong (its manifest agrees with the bytes, the index does not)."""
    s3, bucket, prefix = aws("s3", moto_url), published["bucket"], published["prefix"]
    key = f"{prefix}/model-00002-of-00002.safetensors"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()[:-8]  # truncated
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    listing = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}/{burst_weights.MANIFEST}")["Body"].read()
    )
    listing["files"]["model-00002-of-00002.safetensors"] = {
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{burst_weights.MANIFEST}", Body=json.dumps(listing).encode())
    done = run_node(stack, moto_url, published)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert (
        line
        == "burst weights: model-00002-of-00002.safetensors: lm_head.weight lies outside the file (truncated?)"
    )
    assert not (published["dest"] / MARKER).exists()


def test_an_unpublished_revision_fails_with_the_fix(
    moto_url: str, stack: Stack, published: dict[str, Any]
) -> None:
    s3 = aws("s3", moto_url)
    s3.delete_object(Bucket=published["bucket"], Key=f"{published['prefix']}/{burst_weights.MANIFEST}")
    done = run_node(stack, moto_url, published)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"burst weights: s3://{published['bucket']}/{published['prefix']}/{burst_weights.MANIFEST}:"
    )
    assert line.endswith("(publish the revision first)")


def test_the_user_data_is_bash_and_never_reaches_hugging_face(stack: Stack, tmp_path: Path) -> None:
    plan = plan_burst(stack.inventory, stack.config, "t")
    script = tmp_path / "user-data"
    script.write_text(plan.user_data)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    lower = plan.user_data.lower()
    assert "huggingface" not in lower and "hf_hub" not in lower and "snapshot_download" not in lower
    # The weights come before the join: a node whose copy fails never joins.
    assert plan.user_data.index("burst_weights.py fetch") < plan.user_data.index("kubeadm join")
    # Nothing is installed or pulled at boot: the image carries it.
    for word in ("apt-get", "ctr ", "crictl pull", "docker pull", "pip "):
        assert word not in plan.user_data, word
    assert len(plan.user_data.encode()) < 16 * 1024  # EC2's limit on user data


def test_publish_refuses_a_revision_the_cache_has_not_verified(moto_url: str, tmp_path: Path) -> None:
    folder = revision(tmp_path / "org" / "name" / "abc1234")
    (folder / MARKER).unlink()
    done = subprocess.run(
        [*PUBLISH, "--folder", str(folder), "--url", "s3://nowhere/org/name/abc1234"],
        env=env(moto_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"burst weights: {folder}: no {MARKER}: the model cache Job has not verified this revision"
    )
