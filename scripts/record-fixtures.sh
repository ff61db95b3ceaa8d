#!/usr/bin/env bash
# Record, on a real node, the command outputs the host suite parses, in the fixture form of
# tests/fixtures: first line `$ command`, then its output, last line `# exit=N`.
#   scripts/record-fixtures.sh OUTDIR [NET_DEVICE]
set -u
out=${1:?usage: record-fixtures.sh OUTDIR [NET_DEVICE]}
dev=${2:-eth0}
mkdir -p "$out"
rec() {
  local name=$1 cmd=$2
  local output rc
  output=$(sh -c "$cmd" 2>&1); rc=$?
  # $(...) drops trailing newlines; put back exactly one so `# exit=` stays on its own line.
  { printf '$ %s\n' "$cmd"; [ -n "$output" ] && printf '%s\n' "$output"; printf '# exit=%s\n' "$rc"; } > "$out/$name.txt"
}
smi_fields=$(python3 -c 'from gpufleet.verify.parse import SMI_FIELDS; print(",".join(SMI_FIELDS))')
rec nvidia-smi-query-gpu "nvidia-smi --query-gpu=$smi_fields --format=csv,noheader,nounits"
rec nvidia-smi-q-performance "nvidia-smi -q -d PERFORMANCE"
rec nvidia-smi-version "nvidia-smi --version"
rec proc-driver-version "cat /proc/driver/nvidia/version"
rec dmesg-xid "dmesg | grep -E 'NVRM: Xid' | tail -20"
rec dpkg-query-libnccl2 "dpkg-query -W -f '\${Version}' libnccl2"
rec sys-class-net "cat /sys/class/net/$dev/operstate /sys/class/net/$dev/mtu"
rec sys-class-infiniband "ls /sys/class/infiniband"
