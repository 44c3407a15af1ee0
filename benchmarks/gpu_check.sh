#!/usr/bin/env bash
# The GPU path (issue 14, section 4), in one run of a few minutes, with no downloads:
#
#   (a) the toy notebooks, executed by papermill through the repo's runner
#       (`ip2p notebooks --profile toy --only NN`), which put them on CUDA by themselves; each
#       notebook's wall time here beside the CPU wall time committed in figures/toy/measurements.json;
#   (b) benchmarks/gpu_edit.py: seconds per edit, peak GPU memory and the FLOP floor of our
#       editor against diffusers' InstructPix2Pix pipeline, SD 1.5-shaped, fp16 and bf16.
#
# On a GPU machine, from anywhere (the device machine collects $OUT):
#
#   bash benchmarks/gpu_check.sh --out "$OUT"                  # all seven toy notebooks, then gpu_edit.py
#   bash benchmarks/gpu_check.sh --out "$OUT" --notebooks "04 06"   # a shorter notebook part
#   bash benchmarks/gpu_check.sh --out "$OUT" --notebooks none      # gpu_edit.py only (about two minutes)
#
# Without a GPU it stops at once, unless --tiny: the CPU test of the plumbing (CUDA hidden,
# notebook 04 only, gpu_edit.py --tiny: tiny models, 64 px, 4 steps, fp32), about a minute:
#
#   bash benchmarks/gpu_check.sh --tiny --out /tmp/gpu_check
#
# Results: DIR/notebooks.json and DIR/gpu_edit.json (gpu_edit_tiny.json under --tiny); DIR is
# --out, else $OUT, else build/gpu_check. Executed notebooks and their figures go to the
# git-ignored build/gpu_check/, never over figures/. $PYTHON picks the interpreter (default
# .venv/bin/python when there is one, else python3).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
TINY=0
OUT_DIR=${OUT:-}
NOTEBOOKS=""
while (($#)); do
    case $1 in
        --tiny) TINY=1 ;;
        --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
        --notebooks) NOTEBOOKS=${2:?--notebooks needs "NN NN ...", all or none}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

[[ -n $OUT_DIR ]] && OUT_DIR=$(realpath -m "$OUT_DIR")  # relative to where it was called from
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT_DIR:-$ROOT/build/gpu_check}
BUILD=$ROOT/build/gpu_check
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # this checkout's ip2p_lib, in the kernels too
mkdir -p "$OUT_DIR"

EDIT_ARGS=(--out "$OUT_DIR")
if ((TINY)); then
    EDIT_ARGS+=(--tiny)
    export CUDA_VISIBLE_DEVICES=""  # the tiny mode is the CPU test, on any machine
    NOTEBOOKS=${NOTEBOOKS:-04}
    echo "== TINY mode: tests the plumbing on the CPU; no number below is a GPU measurement"
else
    NOTEBOOKS=${NOTEBOOKS:-all}
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False)." >&2
        echo "This script measures the GPU path: run it on a GPU machine, or add --tiny to test it on the CPU." >&2
        exit 2
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
echo "== python $PY, results in $OUT_DIR"
[[ $NOTEBOOKS == all ]] && NOTEBOOKS=$(cd notebooks && ls [0-9][0-9]_*.ipynb | cut -c1-2 | tr '\n' ' ')
[[ $NOTEBOOKS == none ]] && NOTEBOOKS=""

# ---- (a) the toy notebooks, one runner call each, so that one failure does not hide the others' times
status=0
if [[ -n $NOTEBOOKS ]]; then
    echo "== (a) toy notebooks $NOTEBOOKS: papermill via 'ip2p notebooks', executed copies in $BUILD/notebooks"
    rm -rf "$BUILD/figures" && mkdir -p "$BUILD/figures/toy"
    cp figures/toy/*.json "$BUILD/figures/toy/"  # results some notebooks read (pairs_yield.json, ...)
    rm "$BUILD/figures/toy/measurements.json"    # this run's times only
    for nb in $NOTEBOOKS; do
        "$PY" -m ip2p_lib.cli notebooks --profile toy --only "$nb" --out "$BUILD/notebooks" \
            --figures "$BUILD/figures" --no-progress || status=1
    done
    "$PY" - "$BUILD/figures/toy/measurements.json" figures/toy/measurements.json "$OUT_DIR/notebooks.json" \
        $NOTEBOOKS <<'EOF'
"""Each notebook's wall time in this run beside the committed CPU run's; a table and a JSON file."""
import json, sys
from pathlib import Path

import torch

here, committed, out, *wanted = sys.argv[1:]
run = json.loads(Path(here).read_text())["notebooks"] if Path(here).exists() else {}
ref = json.loads(Path(committed).read_text())["notebooks"]
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
rows = []
print(f"\n| notebook | this run ({device}), s | committed CPU run, s | CPU cores then | CPU / this run |")
print("|---|---|---|---|---|")
for stem in sorted(s for s in ref if s[:2] in wanted):
    now, then = run.get(stem, {}).get("seconds"), ref[stem]["seconds"]
    rows.append({"notebook": stem, "seconds": now, "cpu_seconds": then, "cpu_cores": ref[stem]["machine"]["cores"],
                 "speedup": then / now if now else None})
    print(f"| {stem} | {'FAILED' if now is None else now} | {then} | {ref[stem]['machine']['cores']} | "
          f"{'' if now is None else f'{then / now:.1f}x'} |")
Path(out).write_text(json.dumps({"device": device, "torch": torch.__version__, "notebooks": rows}, indent=2))
print(f"\nwrote {out}")
EOF
fi

# ---- (b) one edit: ours against diffusers, time, memory, FLOP floor
echo "== (b) benchmarks/gpu_edit.py ${EDIT_ARGS[*]}"
"$PY" benchmarks/gpu_edit.py "${EDIT_ARGS[@]}" || status=1

if ((status)); then echo "== gpu_check.sh: a step FAILED (see above)" >&2; else echo "== gpu_check.sh: done"; fi
exit $status
