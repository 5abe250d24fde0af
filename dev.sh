#!/usr/bin/env bash
# One entry point for people and CI: sets up .venv if needed, then runs a task.
#   ./dev.sh demo [options]    synthetic session -> pose -> behaviour -> HTML report
#   ./dev.sh test [pytest args]
#   ./dev.sh bench NAME        run benchmarks/NAME.py (last line: one JSON object)
#   ./dev.sh setup             only (re)install
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  for cand in "${PYTHON:-}" python3.11 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "ethoscribe needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

setup() {
  if [ ! -x .venv/bin/python ]; then
    py=$(find_python)
    echo "creating .venv with $py" >&2
    "$py" -m venv .venv
  fi
  local stamp=.venv/.ethoscribe-installed want
  want=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing ethoscribe and its dependencies into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    # The CPU build of torch first: a plain 'torch' requirement would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,llm]"
    echo "$want" > "$stamp"
  fi
}

task=${1:-help}
shift || true
case "$task" in
  setup) setup ;;
  demo) setup; exec .venv/bin/ethoscribe demo "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  bench)
    setup
    name=${1:?usage: ./dev.sh bench NAME}; shift
    exec .venv/bin/python "benchmarks/${name%.py}.py" "$@" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 1 ;;
esac
