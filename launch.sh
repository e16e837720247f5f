#!/usr/bin/env bash
# vaejax launcher: sets up .venv (idempotent), then runs a job.
#
#   ./launch.sh [--new] [--only N..]  main job: the headline report on the bundled digits
#   ./launch.sh test [pytest args]    the whole test suite (2 workers; VAEJAX_TEST_WORKERS)
#   ./launch.sh setup                 only create/refresh .venv
#   ./launch.sh bench [args]          benchmarks (installs the [bench] extra)
#   ./launch.sh train [flags]         python -m experiments.train ...
#   ./launch.sh <experiment> [--config.key=value ...]
#                                     python -m experiments.<experiment> ...
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=".venv"
cmd="${1:-main}"
if [[ "$cmd" == -* ]]; then
  cmd=main  # ./launch.sh --new, --only NAME ...: options of the main job
else
  [[ $# -gt 0 ]] && shift
fi

# One set of extras for every command but bench, so that switching commands never reinstalls.
case "$cmd" in
  bench) extras="train,test,bench" ;;
  *) extras="train,test" ;;
esac

ensure_venv() {
  local stamp="$VENV/.vaejax-stamp"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=$extras"
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[launch] creating $VENV with $($PYTHON --version)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  # Reinstall when pyproject.toml changed or a different set of extras is needed.
  if [[ ! -f "$stamp" ]] || ! grep -qxF "$want" "$stamp"; then
    echo "[launch] installing vaejax[$extras] into $VENV (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}

ensure_venv
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1

case "$cmd" in
  setup) echo "[launch] $VENV is ready" ;;
  main) exec "$PY" -m experiments.main "$@" ;;
  # Two pytest workers (VAEJAX_TEST_WORKERS; 0: one process), a test file each at a time:
  # most tests wait on single-threaded XLA compilation, which one process does on one core.
  test) exec "$PY" -m pytest -n "${VAEJAX_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  bench) exec "$PY" -m benchmarks.run_all "$@" ;;
  train) exec "$PY" -m experiments.train "$@" ;;
  *)
    if [[ ! -f "experiments/${cmd}.py" && ! -f "experiments/${cmd}/__main__.py" ]]; then
      echo "[launch] unknown command or experiment '$cmd'." >&2
      echo "  commands: setup, test, bench, train, or one of:" >&2
      (ls experiments/*.py; ls -d experiments/*/__main__.py | xargs -n1 dirname) 2>/dev/null | xargs -n1 basename | sed 's/\.py$//' | grep -v '^_' | sed 's/^/    /' >&2
      exit 2
    fi
    exec "$PY" -m "experiments.${cmd}" "$@"
    ;;
esac
