#!/bin/bash
# The admission gate on the GPU machine (kind nvidia-h200-x2), from the repository root:
#   bash bench/gate_h200x2.sh OUT_DIR
# the passing run, two deliberately degraded runs (NVLink P2P off; one GPU hidden), the probe's own
# figures, and the h100 site refused. bench/gate_report.py turns OUT_DIR into bench/results/gate_h200x2.md.
set -u
out=${1:?OUT_DIR}
mkdir -p "$out"
# NVLink multicast stays off on this shared host (the device notes say why).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

step() {
    local name=$1
    shift
    local start=$SECONDS
    "$@" >"$out/$name.json" 2>>"$out/stderr.txt"
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >>"$out/commands.tsv"
}

step pass python3 -m gpufleet.cli verify h200x2 --local --part gpu --part network --part perf --json
step p2p-disabled env NCCL_P2P_DISABLE=1 python3 -m gpufleet.cli verify h200x2 --local --part gpu --part network --part perf --json
step gpu-hidden env CUDA_VISIBLE_DEVICES=0 python3 -m gpufleet.cli verify h200x2 --local --part perf --json
step h100-refused python3 -m gpufleet.cli verify h100 --local --part gpu --json
step probe python3 gpufleet/verify/probe.py --gpus 2 --sizes 67108864,1073741824,4294967296 --deadline-s 45
nvidia-smi --query-gpu=index,name,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv,noheader >"$out/gpus.txt"
