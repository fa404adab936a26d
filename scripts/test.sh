#!/usr/bin/env bash
# The project's test command (README, CI): the whole default suite, real data from ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_DISABLE_DOCKER_CPU_WARNING=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
