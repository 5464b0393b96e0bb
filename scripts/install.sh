#!/usr/bin/env bash
# The one install procedure, used by `make install`, `make check-install` and the Dockerfile.
#   scripts/install.sh VENV [EXTRAS]      e.g. scripts/install.sh .venv dev
# With extras (development) citeqa is installed editable; without (the container, and what
# `pip install citeqa` gives a user) it is a plain, non-editable install of the package.
# torch is installed first and pinned, so the CPU build is used: an unpinned torch (asked for
# by sentence-transformers) would pull gigabytes of CUDA packages. TORCH_INDEX_URL may point
# at a CPU wheel index (the Dockerfile uses PyTorch's); here a local CPU wheel is found by pip.
set -euo pipefail
venv=$(realpath -m "${1:-.venv}")
extras=${2:-}
python=${PYTHON:-python3}
torch_version=2.13.0

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  "${pip[@]}" install --quiet "torch==$torch_version" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
cd "$(dirname "$0")/.."
# The browser tests (tests/test_web.py) drive Debian's chromium: Playwright's own browser
# download does not work offline.
if [[ ",$extras," == *",dev,"* ]] && [ ! -x /usr/bin/chromium ]; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if [ -n "$extras" ]; then
  "${pip[@]}" install --quiet -e ".[$extras]"
else
  "${pip[@]}" install --quiet .
fi
"$venv/bin/python" -c 'import torch; print(f"citeqa installed: torch {torch.__version__}")'
