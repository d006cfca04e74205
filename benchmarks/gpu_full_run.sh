#!/usr/bin/env bash
# The seed's full training command on one GPU, timed: the hierarchical agent and plain SAC, each
# with SB3's own update and with the fast SAC update (sac.compile, sac.cuda_graphs;
# trainer/training/fast_sac.py).
#
#   benchmarks/gpu_full_run.sh [--steps N] [--only hier|plain] [--paths "sb3 compile cuda_graphs"] [--budget S]
#   benchmarks/gpu_full_run.sh --device cpu --steps 600 --paths "sb3 compile"   # check the script itself
#
# The seed's command is 500k steps, 16 envs, eval every 15k. One invocation must finish unattended
# within 10 minutes, so --steps (default 8000) scales every run down, keeping the seed's 16 envs and
# its evaluations per step (eval every 3% of the run); the 500k-step wall time printed is
# extrapolated from the measured rate and labelled so. --budget (default 560 s) bounds the whole
# invocation: each run gets what is left of it, and runs that no longer fit are reported as skipped.
# Run it on the GPU machine from the repository root with the venv built (`make` or
# `pip install -r requirements.lock` + CUDA torch).
# Prints, per run: wall time, env steps/s, SAC gradient updates/s, peak GPU memory, and the
# extrapolated 500k wall time; then the device. Exits 1 when a run failed, 2 on a usage error.
set -euo pipefail

STEPS=8000
ONLY="hier plain"
PATHS="sb3 compile cuda_graphs"
DEVICE=cuda
BUDGET=560
# The repository's .venv where there is one (make), else what PATH holds (the trainer image's /opt/venv).
[ -x .venv/bin/python ] && PYTHON="${PYTHON:-.venv/bin/python}" || PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/trainer ] && TRAINER="${TRAINER:-.venv/bin/trainer}" || TRAINER="${TRAINER:-trainer}"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --paths) PATHS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "gpu_full_run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v "$TRAINER" >/dev/null; then
  echo "gpu_full_run.sh: no trainer CLI ($TRAINER): build .venv with make, or install the package" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_full_run.sh: torch sees no CUDA device here; run it on a GPU machine" >&2
  exit 2
fi

OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu-full-run.XXXXXX")"
export TRAINER_STATE_DIR="$OUT/state"
EVAL=$(( STEPS * 15000 / 500000 ))
[ "$EVAL" -lt 200 ] && EVAL=200

declare -A CONFIG=([hier]=configs/phase_b1_options.yaml [plain]=configs/phase_a_baseline.yaml)
declare -A FLAGS=([sb3]="" [compile]="--set sac.compile=true" [cuda_graphs]="--set sac.cuda_graphs=true")

FAILED=0
for algo in $ONLY; do
  for path in $PATHS; do
    run="$OUT/$algo-$path"
    left=$(( BUDGET - SECONDS ))
    if [ "$left" -lt 30 ]; then
      echo "== $algo / $path: skipped, ${left}s of the ${BUDGET}s budget left" >&2
      continue
    fi
    echo "== $algo / $path: $STEPS steps, 16 envs, eval every $EVAL (at most ${left}s)" >&2
    status=0
    # shellcheck disable=SC2086  # FLAGS holds zero or two words on purpose
    timeout "$left" "$TRAINER" train --config "${CONFIG[$algo]}" --symbol SPY --total-timesteps "$STEPS" \
        --n-envs 16 --eval-freq "$EVAL" --output-dir "$run" --no-mlflow --set "training.device=$DEVICE" \
        ${FLAGS[$path]} > "$run.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
      [ "$status" -eq 124 ] && reason="out of the budget" || reason="exit $status"
      echo "   failed ($reason); last lines of $run.log:" >&2
      tail -5 "$run.log" >&2
      FAILED=$(( FAILED + 1 ))
    fi
  done
done

"$PYTHON" - "$OUT" "$STEPS" <<'PY'
import json, sys
from pathlib import Path

import torch

out, steps = Path(sys.argv[1]), int(sys.argv[2])
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"
print(f"device: {device}; torch {torch.__version__}; {steps} steps per run, 16 envs")
print(f"{'run':<22}{'status':>11}{'wall s':>8}{'env steps/s':>13}{'updates/s':>11}{'GPU MB':>9}{'500k (extrapolated)':>22}")
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    rate = s.get("steps_per_second") or 0
    full = f"{500_000 / rate / 60:.1f} min" if rate else "-"
    print(f"{summary.parent.name:<22}{s['status'][:10]:>11}{s['wall_seconds']:>8.0f}{rate:>13.0f}{s.get('updates_per_second') or 0:>11.0f}"
          f"{s.get('gpu_max_memory_mb') or 0:>9.0f}{full:>22}")
print(f"(runs and logs in {out})")
PY
if [ "$FAILED" -gt 0 ]; then
  echo "gpu_full_run.sh: $FAILED run(s) failed (their logs are named above)" >&2
  exit 1
fi
