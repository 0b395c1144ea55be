#!/usr/bin/env bash
# Install carafe_mm and the stack it is tested with (the exact versions in
# requirements/constraints.txt) into the active Python.
#
#   bash tools/install.sh
#
# Idempotent: each step is skipped when what it installs is already there,
# so a second run takes seconds. The slow step on a fresh machine is building
# mmcv 2.1.0 with its compiled ops from source (~15 min on 2 cores; pip
# caches the wheel afterwards). Set PYTHON to pick the interpreter.
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '\n[install] %s\n' "$*"; }

# Prints nothing and succeeds when every "name==version" given is installed.
have() {
    "$PYTHON" - "$@" <<'EOF'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if want and got.split('+')[0] != want:
        sys.exit(1)
EOF
}

# Everything pip installs is held to the pins of requirements/constraints.txt,
# so no step can pull in a different torch (and its GBs of CUDA packages) or
# numpy 2, and a torch already at the pinned version is left as it is.
pip_install() {
    "$PYTHON" -m pip install -c requirements/constraints.txt "$@"
}

log 'installing the pinned requirements (a no-op when present)'
pip_install -q -r requirements.txt

if have mmcv==2.1.0 && "$PYTHON" -c 'import mmcv.ops' 2>/dev/null; then
    log 'mmcv 2.1.0 with ops present'
else
    log 'building mmcv 2.1.0 with ops from source (about 15 min on 2 cores)'
    MMCV_WITH_OPS=1 pip_install --no-build-isolation mmcv==2.1.0
fi

# Whether carafe_mm._C is newer than its sources and setup.py (the compiler
# flags) and loads (it does not when built against another torch).
extension_current() {
    local so
    so=$(ls carafe_mm/_C*.so 2>/dev/null | head -n 1)
    [ -n "$so" ] &&
        [ -z "$(find carafe_mm/csrc setup.py -newer "$so" -print -quit)" ] &&
        (cd / && "$PYTHON" -c 'import torch, carafe_mm._C' 2>/dev/null)
}

# carafe_mm from this checkout, in development mode; later runs rebuild the
# extension only when it is not current, and then only the sources that
# changed (ninja).
log 'building carafe_mm and its extension'
# (checked from outside the checkout, where the current folder would shadow
# what is installed)
if (cd / && "$PYTHON" - "$ROOT") <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec('carafe_mm')
ok = spec is not None and os.path.dirname(spec.origin) == os.path.join(
    sys.argv[1], 'carafe_mm')
sys.exit(0 if ok else 1)
EOF
then
    if extension_current; then
        log 'carafe_mm installed from this checkout, its extension up to date'
    else
        "$PYTHON" setup.py -q build_ext --inplace
    fi
else
    pip_install --no-build-isolation --no-deps --use-pep517 -e .
fi
"$PYTHON" - <<'EOF'
import carafe_mm.ops as ops
if not ops.extension_available():
    raise SystemExit(f'[install] carafe_mm._C does not load: '
                     f'{ops.extension_error()}')
print('[install] compiled op: loaded')
EOF
log 'done'
