#!/usr/bin/env bash
# One install for everything: the system packages the lab needs (as root), then .venv/ with the
# CLI, Pulumi SDK and providers, pyinfra, Ansible, testinfra and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gpufleet needs Python 3.11+" >&2; exit 2; }
# The lab: nspawn hosts from debootstrap, a signed local apt mirror, ssh.
LAB_PACKAGES="debootstrap systemd-container openssh-client dpkg-dev apt-utils gnupg iproute2 util-linux"
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $LAB_PACKAGES >/dev/null
else
  echo "not root: skipping the lab's system packages ($LAB_PACKAGES); the lab and its tests need them" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Prometheus for the burst signal tests (PromQL against a real server scraping a real Triton):
# Debian's binary, unpacked into .venv/bin, so no service is installed or started.
if [ ! -x .venv/bin/prometheus ]; then
  debs=$(mktemp -d)
  if (cd "$debs" && apt-get download -qq prometheus 2>/dev/null) && dpkg-deb -x "$debs"/prometheus_*.deb "$debs/root"; then
    cp "$debs/root/usr/bin/prometheus" .venv/bin/prometheus
  else
    echo "could not fetch Debian's prometheus package; the Prometheus signal test needs .venv/bin/prometheus" >&2
  fi
  rm -rf "$debs"
fi
# HAProxy for the admission tests (the real gateway in front of a real Triton): Debian's binary
# unpacked into .venv/bin like Prometheus, its shared libraries installed, no service started.
if [ ! -x .venv/bin/haproxy ]; then
  debs=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends liblua5.3-0 libopentracing-c-wrapper0 >/dev/null
  fi
  if (cd "$debs" && apt-get download -qq haproxy 2>/dev/null) && dpkg-deb -x "$debs"/haproxy_*.deb "$debs/root"; then
    cp "$debs/root/usr/sbin/haproxy" .venv/bin/haproxy
  else
    echo "could not fetch Debian's haproxy package; the admission tests need .venv/bin/haproxy" >&2
  fi
  rm -rf "$debs"
fi
# vLLM's argument definitions for the engine-configuration tests: the wheel of the version the
# Triton image carries, read as files (never imported or installed) from .venv/wheels (336 MB).
VLLM=$(.venv/bin/python -c 'from gpufleet.plan.engine import VLLM_VERSION; print(VLLM_VERSION)')
if ! ls .venv/wheels/vllm-"$VLLM"-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download --quiet --no-deps --only-binary :all: "vllm==$VLLM" -d .venv/wheels
fi
echo "gpufleet installed in .venv ($(.venv/bin/gpufleet --help >/dev/null && echo ok))"
