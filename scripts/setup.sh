#!/usr/bin/env bash
# Set up everything on a fresh machine: ffmpeg and espeak-ng (apt, if missing), a virtualenv in
# .venv, torch 2.13.0 first (the CPU wheel; a bare `torch` would pull GBs of CUDA packages), then
# the project with its test extras. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in ffmpeg espeak-ng; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "installing ${missing[*]} with apt-get"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ffmpeg espeak-ng >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[test]"
.venv/bin/python -c "import cv2, ray, scenedetect, av, webdataset, torch; assert cv2.__version__.startswith('4.')" \
  || { echo "setup failed: the environment does not import" >&2; exit 1; }
echo "setup done: $(.venv/bin/python -c 'import torch, ray, cv2; print(f"torch {torch.__version__}, ray {ray.__version__}, opencv {cv2.__version__}")')"
