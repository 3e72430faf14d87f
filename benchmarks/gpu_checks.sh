#!/usr/bin/env bash
# The GPU checks of the "Performance" issue, in one go, for a session that is lent a GPU machine:
#
#     bash benchmarks/gpu_checks.sh      # from the repository root; under 8 minutes on one H200
#
# Runs benchmarks/data_throughput.py, trial_speed.py and gpu_packing.py with --json, writes each
# one's JSON to "$OUT/<name>.json" and its log to "$OUT/<name>.log" (OUT defaults to
# ./gpu-results), and prints one summary line per benchmark, also kept in "$OUT/summary.txt". A
# benchmark that fails or runs past its share of the time is recorded as FAILED and the next one
# runs; the script exits 1 if any failed.
#
# Python: $PYTHON if set, else the first of .venv-gpu/bin/python and python3 whose torch sees a
# GPU; where there is none, .venv-gpu is built with pip (needs network): `pip install torch
# ray[tune] optuna tensorboard matplotlib numpy`, then this checkout with --no-deps. The
# repository root goes on PYTHONPATH, so nothing of circletune needs installing.
#
# data_throughput and trial_speed need only torch and numpy. gpu_packing runs real Ray Tune
# trials where ray[tune] and optuna import; where they are missing it tries wheels in .whl/
# (installed offline into /tmp/circletune-site), then pip (with network), and else runs its
# `processes` runner: the same trainable loop in plain processes sharing the GPU, named as such
# in its output. The lent H200 has neither Ray nor Optuna nor network, and Ray's wheel (79 MB for
# ray 2.60, cp312) is larger than the 64 MiB that can travel there, so expect that runner there.
set -u

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
BUDGET_S=470 # everything, installs included, must end within 8 minutes
FAILED=0

say() {
	echo "$*" | tee -a "$SUMMARY"
}

cuda_python() {
	"$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

# 1. A python whose torch sees the GPU.
PY=""
for candidate in "${PYTHON:-}" .venv-gpu/bin/python python3; do
	if [ -n "$candidate" ] && cuda_python "$candidate"; then
		PY="$candidate"
		break
	fi
done
if [ -z "$PY" ]; then
	echo "no python with CUDA torch; building .venv-gpu (needs network)"
	if python3 -m venv .venv-gpu &&
		.venv-gpu/bin/pip install -q torch "ray[tune]" optuna tensorboard matplotlib numpy &&
		.venv-gpu/bin/pip install -q -e . --no-deps && cuda_python .venv-gpu/bin/python; then
		PY=.venv-gpu/bin/python
	else
		say "FAILED setup: no python with CUDA torch, and .venv-gpu could not be built"
		exit 1
	fi
fi
say "python: $PY, $("$PY" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())')"

# 2. What gpu_packing needs besides torch.
NEEDS='import ray.tune, optuna, sqlalchemy, tensorboard'
if ! "$PY" -c "$NEEDS" 2>/dev/null; then
	if compgen -G ".whl/*.whl" >/dev/null; then
		"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
			--target /tmp/circletune-site .whl/*.whl &&
			export PYTHONPATH="$PYTHONPATH:/tmp/circletune-site"
	else
		timeout 120 "$PY" -m pip install -q --retries 0 --timeout 10 "ray[tune]" optuna tensorboard
	fi
	if ! "$PY" -c "$NEEDS" 2>"$OUT/setup.log"; then
		say "note: ray[tune]/optuna not importable ($(tail -n 1 "$OUT/setup.log")); gpu_packing runs plain processes instead of Ray trials"
	fi
fi

# 3. The benchmarks, each given a share of the time left; one failing does not stop the rest.
run() { # name, cap in seconds, arguments...
	local name=$1 cap=$2
	shift 2
	local left=$((BUDGET_S - SECONDS))
	local limit=$((cap < left ? cap : left))
	if [ "$limit" -lt 20 ]; then
		say "FAILED $name: skipped, only ${left}s of the budget left"
		FAILED=1
		return
	fi
	local start=$SECONDS
	timeout --kill-after=10 "$limit" "$PY" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.log"
	local rc=$?
	local took=$((SECONDS - start))
	if [ $rc -ne 0 ]; then
		[ $rc -eq 124 ] && rc="$rc (past its ${limit}s)"
		say "FAILED $name: rc=$rc after ${took}s; last log line: $(tail -n 1 "$OUT/$name.log")"
		FAILED=1
		return
	fi
	say "ok $name (${took}s): $("$PY" - "$name" "$OUT/$name.json" <<'EOF'
import json, sys

name, path = sys.argv[1], sys.argv[2]
lines = [line for line in open(path) if line.strip()]
r = json.loads(lines[-1])
if name == "data_throughput":
    cuda = r.get("cuda") or {}
    print(f"CPU x seed {r['ratio']}; CUDA samples/s {cuda.get('samples_per_s')}")
elif name == "trial_speed":
    parts = [
        f"CPU {m} matched/default alone {r['cpu'][m]['alone_matched_over_default']:.2f}, "
        f"concurrent {r['cpu'][m]['concurrent_matched_over_default']:.2f}"
        for m in r["models"]
    ]
    cuda = r.get("cuda")
    if cuda:
        for m, f in cuda["speed"].items():
            ratios = ", ".join(f"{v} {x:.2f}" for v, x in f["over_baseline"].items())
            parts.append(f"CUDA {m} x baseline: {ratios}")
        for m, f in cuda["accuracy"].items():
            parts.append(f"val_rmse {m} {f['val_rmse']}")
    print("; ".join(parts))
else:
    if not r["measured"]:
        print(r["reason"])
    else:
        rows = ", ".join(
            f"{p['trials']}/GPU failed" if "error" in p
            else f"{p['trials']}/GPU {p['effective_samples_per_s']:.0f}/s "
            f"util {p['gpu_utilisation_mean']}"
            for p in r["packings"]
        )
        print(
            f"{r['runner']} runner: {rows}; "
            f"recommended gpus_per_trial {r['recommended_gpus_per_trial']}"
        )
EOF
)"
}

# Shorter than each benchmark's defaults, to fit the budget: torch.compile alone takes a minute
# or two of trial_speed's share.
run data_throughput 60 benchmarks/data_throughput.py
run trial_speed 230 benchmarks/trial_speed.py --cpu-rounds 1 --cpu-seconds 2 --cuda-rounds 3 \
	--cuda-steps 50
run gpu_packing 180 benchmarks/gpu_packing.py --seconds 20

say "done in ${SECONDS}s; results in $OUT"
exit $FAILED
