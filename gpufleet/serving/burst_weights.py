"""The burst model's weights on S3: published once per revision, copied onto each burst node.

`publish` runs once per pinned revision, from a host that mounts the site's model cache: it
checks the verified revision against its safetensors index again, records every file's size
and SHA-256 in a manifest, uploads the files (S3 checks each part's SHA-256 on arrival) and the
manifest last, so a node never sees a manifest whose files are not all there.

`fetch` runs on each burst node from its user data, before `kubeadm join`, with the python3 and
boto3 baked into the node image beside model_cache.py: it reads `s3://bucket/prefix/` from an
SSM parameter, copies the files onto local NVMe, checks each one's SHA-256 against the
manifest and the whole revision against its safetensors index (model_cache.verify), and writes
the `.verified` marker the serving pods wait for. Anything wrong is one line on stderr and exit
1: the user data stops, the node never joins, so it is never Ready. Never Hugging Face.

    python3 burst_weights.py fetch --parameter /gpufleet/dc1/burst/weights --dest /opt/dlami/nvme/weights/ORG/NAME/REV
    python -m gpufleet.serving.burst_weights publish --folder /weights/ORG/NAME/REV --url s3://BUCKET/ORG/NAME/REV
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

try:  # on a burst node: shipped beside this file
    from model_cache import MARKER, CacheError, verify  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from gpufleet.serving.model_cache import MARKER, CacheError, verify

MANIFEST = "gpufleet-manifest.json"
CHUNK = 16 * 2**20
PARALLEL_FILES = 4


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def split_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise CacheError(f"{url!r} is not s3://bucket/prefix")
    bucket, prefix = url[5:].split("/", 1)
    return bucket, prefix.strip("/")


def manifest(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MARKER, MANIFEST))
    return {
        "revision": folder.name,
        "files": {
            str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files
        },
    }


def publish(folder: Path, url: str, s3: Any) -> dict[str, Any]:
    """Upload one verified revision of the model cache, the manifest last."""
    if not (folder / MARKER).is_file():
        raise CacheError(f"{folder}: no {MARKER}: the model cache Job has not verified this revision")
    verify(folder)
    bucket, prefix = split_url(url)
    listing = manifest(folder)
    for name in listing["files"]:
        s3.upload_file(
            str(folder / name), bucket, f"{prefix}/{name}", ExtraArgs={"ChecksumAlgorithm": "SHA256"}
        )
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(listing, indent=1).encode())
    return listing


def fetch(url: str, dest: Path, s3: Any) -> int:
    """Copy a published revision onto local disk and check it; returns the bytes copied."""
    if (dest / MARKER).is_file():
        return 0
    bucket, prefix = split_url(url)
    try:
        listing = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")["Body"].read())
    except Exception as exc:  # the client's errors are its own classes; any of them stops the node
        raise CacheError(f"s3://{bucket}/{prefix}/{MANIFEST}: {exc} (publish the revision first)") from exc
    files: dict[str, dict[str, Any]] = listing["files"]
    need = sum(int(f["bytes"]) for f in files.values())
    root = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(root).free
    if free < need:
        raise CacheError(f"{root}: {free} bytes free, the revision needs {need}")
    dest.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> None:
        target = dest / name
        if dest.resolve() not in target.resolve().parents:
            raise CacheError(f"{name}: outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        s3.download_file(bucket, f"{prefix}/{name}", str(partial))
        got, want = sha256(partial), files[name]["sha256"]
        if got != want:
            partial.unlink()
            raise CacheError(f"{name}: sha256 {got[:16]}… differs from the manifest's {want[:16]}…")
        partial.rename(target)

    _each(one, sorted(files))
    verify(dest)
    (dest / MARKER).write_text(json.dumps({"revision": listing["revision"], "bytes": need, "from": url}))
    return need


def _each(task: Callable[[str], None], names: list[str]) -> None:
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        for done in [pool.submit(task, n) for n in names]:
            done.result()


def main(argv: list[str] | None = None) -> int:
    import boto3  # type: ignore[import-untyped]  # the node image has python3-boto3
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    ap = argparse.ArgumentParser(prog="burst_weights")
    sub = ap.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch")
    get.add_argument("--parameter", required=True, help="SSM parameter holding s3://bucket/prefix")
    get.add_argument("--dest", required=True, type=Path)
    get.add_argument("--region")
    put = sub.add_parser("publish")
    put.add_argument("--folder", required=True, type=Path)
    put.add_argument("--url", required=True)
    put.add_argument("--region")
    args = ap.parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    try:
        if args.command == "fetch":
            ssm = session.client("ssm")
            url = ssm.get_parameter(Name=args.parameter)["Parameter"]["Value"]
            size = fetch(url, args.dest, session.client("s3"))
            print(f"burst weights: {args.dest} verified ({size} bytes copied from {url})")
        else:
            listing = publish(args.folder, args.url, session.client("s3"))
            print(f"burst weights: {len(listing['files'])} files of {args.folder} published to {args.url}")
    except (CacheError, BotoCoreError, ClientError) as exc:
        print(f"burst weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
