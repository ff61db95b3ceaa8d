#!/usr/bin/env bash
# One install for everything: the system packages the lab needs (as root), then .venv/ with the
# CLI, Pulumi SDK and providers, pyinfra, Ansible, testinfra and the test tools.
# Prints each step as it starts and the seconds it took: a fresh machine takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gpufleet needs Python 3.11+" >&2; exit 2; }
STEPS=7
step_no=0
step_started=$SECONDS
setup_started=$SECONDS
step() {
  if [ "$step_no" -gt 0 ]; then echo "      done in $((SECONDS - step_started)) s"; fi
  step_no=$((step_no + 1))
  step_started=$SECONDS
  echo "[$step_no/$STEPS] $*"
}
# A long quiet command (pip) says every 20 s that it is still going, so setup is never silent.
with_heartbeat() {
  local started=$SECONDS beat
  ( while sleep 20; do echo "      still going, $((SECONDS - started)) s"; done ) &
  beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$rc"
}
# The lab: nspawn hosts from mmdebstrap, a signed local apt mirror, ssh.
LAB_PACKAGES="mmdebstrap systemd-container openssh-client dpkg-dev apt-utils gnupg iproute2 util-linux"
step "system packages for the lab (apt): $LAB_PACKAGES"
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $LAB_PACKAGES >/dev/null
else
  echo "      not root: skipped; the lab and its tests need them" >&2
fi
step "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
# Newer pip is a nicety (the venv's own handles editable installs): a flaky index must not stop setup.
with_heartbeat .venv/bin/python -m pip install --quiet --retries 2 --timeout 20 --upgrade pip ||
  echo "      pip not upgraded (index unreachable); the venv's own pip carries on"
step "gpufleet and its dependencies (pip install -e '.[dev]': Pulumi, pyinfra, Ansible, testinfra, ...)"
with_heartbeat .venv/bin/python -m pip install --quiet -e '.[dev]'
# Prometheus for the burst signal tests (PromQL against a real server scraping a real Triton):
# Debian's binary, unpacked into .venv/bin, so no service is installed or started.
step "Prometheus binary for the signal tests (Debian's package, into .venv/bin)"
if [ ! -x .venv/bin/prometheus ]; then
  debs=$(mktemp -d)
  if (cd "$debs" && apt-get download -qq prometheus 2>/dev/null) && dpkg-deb -x "$debs"/prometheus_*.deb "$debs/root"; then
    cp "$debs/root/usr/bin/prometheus" .venv/bin/prometheus
  else
    echo "      could not fetch Debian's prometheus package; the Prometheus signal test needs .venv/bin/prometheus" >&2
  fi
  rm -rf "$debs"
else
  echo "      already there"
fi
step "HAProxy binary for the admission tests (Debian's package, into .venv/bin)"
# The real gateway in front of a real Triton: Debian's binary unpacked into .venv/bin like
# Prometheus, its shared libraries installed, no service started.
if [ ! -x .venv/bin/haproxy ]; then
  debs=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends liblua5.3-0 libopentracing-c-wrapper0 >/dev/null
  fi
  if (cd "$debs" && apt-get download -qq haproxy 2>/dev/null) && dpkg-deb -x "$debs"/haproxy_*.deb "$debs/root"; then
    cp "$debs/root/usr/sbin/haproxy" .venv/bin/haproxy
  else
    echo "      could not fetch Debian's haproxy package; the admission tests need .venv/bin/haproxy" >&2
  fi
  rm -rf "$debs"
else
  echo "      already there"
fi
# vLLM's argument definitions for the engine-configuration tests: the wheel of the version the
# Triton image carries (the production BOM's `vllm`), read as files (never imported or installed)
# from .venv/wheels (336 MB).
step "vLLM wheel for the engine-argument tests (pip download, not installed)"
VLLM=$(.venv/bin/python -c 'from gpufleet.inventory.load import load_inventory; print(load_inventory("dc1").bom.vllm)')
if ! ls .venv/wheels/vllm-"$VLLM"-*.whl >/dev/null 2>&1; then
  with_heartbeat .venv/bin/python -m pip download --quiet --no-deps --only-binary :all: "vllm==$VLLM" -d .venv/wheels
else
  echo "      already there"
fi
step "check the CLI"
.venv/bin/gpufleet --help >/dev/null
echo "      done in $((SECONDS - step_started)) s"
echo "gpufleet installed in .venv in $((SECONDS - setup_started)) s; next: .venv/bin/gpufleet rehearse (as root)"
