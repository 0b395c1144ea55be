#!/usr/bin/env bash
# Compile carafe_mm's CUDA kernels against a CUDA build of torch, on a machine
# with nvcc but no GPU, so that a CUDA break never lands unseen.
#
#   bash tools/check_cuda_build.sh
#
# Uses (and creates on first use, ~4.7 GB) a separate virtual environment
# with the CUDA 13.0 build of torch 2.13.0, at $CARAFE_CUDA_VENV
# (default ~/.cache/carafe_mm/venv-cuda). Builds out of tree, into a
# temporary folder, then loads the library in that environment and checks
# that the CUDA kernels registered.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CARAFE_CUDA_VENV:-$HOME/.cache/carafe_mm/venv-cuda}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "check_cuda_build: no nvcc at $CUDA_HOME/bin/nvcc (set CUDA_HOME)" >&2
    exit 1
fi

if ! "$VENV/bin/python" -c 'import torch, ninja; assert torch.version.cuda' \
        2>/dev/null; then
    echo "[cuda-check] creating $VENV with the CUDA build of torch 2.13.0"
    python3 -m venv "$VENV"
    # The machine's pip config points at the CPU wheel; ignore it here.
    PIP_FIND_LINKS= PIP_CONFIG_FILE=/dev/null \
        "$VENV/bin/pip" install -q torch==2.13.0 ninja numpy "setuptools<81"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cd "$ROOT"
echo "[cuda-check] nvcc $("$CUDA_HOME/bin/nvcc" --version | tail -1)"
PATH="$CUDA_HOME/bin:$PATH" FORCE_CUDA=1 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
    CPATH="$SITE/nvidia/cu13/include${CPATH:+:$CPATH}" \
    MAX_JOBS=${MAX_JOBS:-2} \
    "$VENV/bin/python" setup.py -q build_ext \
        --build-temp "$OUT/temp" --build-lib "$OUT/lib"

"$VENV/bin/python" - "$OUT/lib" <<'PY'
import glob
import sys

import torch

(lib,) = glob.glob(f'{sys.argv[1]}/carafe_mm/_C*.so')
torch.ops.load_library(lib)
for op in ('carafe_forward', 'carafe_backward'):
    for key in ('CPU', 'CUDA'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            f'carafe_mm::{op}', key), f'no {key} kernel for {op}'
print(f'[cuda-check] OK: {lib} built with CUDA {torch.version.cuda} and '
      'registers CPU and CUDA kernels')
PY
