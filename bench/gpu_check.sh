#!/usr/bin/env bash
# gpucal's one prepared GPU check: everything a lent GPU should establish, in one call.
#
#   bash bench/gpu_check.sh [--dry] [--out DIR] [--budget SECONDS] [--only PHASE,PHASE...]
#
# Phases (each time-boxed with `timeout`, all under one global budget, default 480 s, so a
# hang cannot eat the call; what is left is recorded as "skipped: out of time"):
#   wheels      install .whl/*.whl (bench/build_wheelhouse.sh) to /tmp/gpucal-site, if present
#   env         nvidia-smi, Python, CuPy/CUDA/NVRTC versions
#   info        gpucal info (NVML, versions, the GPU probe: compiles and runs test kernels)
#   kernels     gpucal kernels (NVRTC for sm_90, CuPy's header check, CuPy's cache warmed)
#   gpu_tests   the GPU tests (about 190) with GPUCAL_REQUIRE_GPU=1 (a skip for want of a GPU fails)
#   agreement   full-frame GPU/CPU agreement, both ramp-fit algorithms
#   bench       gpucal bench: gpu and cpu side by side, batches 1,4,16 (gpu), 1 (cpu)
# Results go to $OUT (the device tool's folder; else --out, default /tmp/gpucal_check_out), at
# most 8 files, flat: summary.md, summary.json, info.txt, bench.json, bench.png,
# logs.tar.gz (every phase's log, pytest's junit XML, the bench's child logs).
#
# Dry mode (--dry, or automatic when the GPU probe fails): the same phases here; the GPU
# phases report "skipped: no GPU", kernels compile without warming, and the bench runs on a
# small frame with 'gpu' on the emulated device (GPUCAL_EMULATE_GPU=1) and the CPU backend,
# so the script, the bench's device paths and the summary are exercised without a GPU
# (tests/test_gpu_check.py does this in CI).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0
ONLY=""
OUTDIR=${OUT:-/tmp/gpucal_check_out}
BUDGET=${GPU_CHECK_BUDGET:-480}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --out) OUTDIR=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --only) ONLY=",$2,"; shift ;;   # a rerun of some phases (e.g. --only info,bench)
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
RESERVE=25                      # seconds kept for the summary and the tarball
START=$(date +%s)
WORK=$(mktemp -d /tmp/gpucal-check.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS" "$OUTDIR"
PHASES=$WORK/phases.tsv
: > "$PHASES"
export PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=$WORK/cupy-cache
cd "$REPO" || exit 2

# ---------------------------------------------------------------- helpers
record() {  # name status rc seconds command (one line: tabs and newlines become spaces)
  local cmd=${5//$'\n'/ }
  cmd=${cmd//$'\t'/ }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${cmd:0:300}" >> "$PHASES"
  echo "[gpu_check] $1: $2 (${4}s)"
}

# phase NAME BOX_SECONDS GPU_ONLY(0/1) COMMAND...: run it time-boxed, log to $LOGS/NAME.log
phase() {
  local name=$1 box=$2 gpu_only=$3
  shift 3
  local cmd="$*"
  if [ -n "$ONLY" ] && [[ "$ONLY" != *",$name,"* ]]; then
    record "$name" "skipped: not asked for (--only)" "" 0 "$cmd"
    return
  fi
  if [ "$gpu_only" = 1 ] && [ "$GPU" = 0 ]; then
    record "$name" "skipped: no GPU" "" 0 "$cmd"
    return
  fi
  local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
  local limit=$(( box < left ? box : left ))
  if [ "$limit" -lt 10 ]; then
    record "$name" "skipped: out of time" "" 0 "$cmd"
    return
  fi
  local t0 rc
  t0=$(date +%s)
  echo "[gpu_check] $name (at most ${limit}s): $cmd"
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then record "$name" ok 0 "$dt" "$cmd"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" "timed out after ${limit}s" "$rc" "$dt" "$cmd"
  else record "$name" failed "$rc" "$dt" "$cmd"
  fi
}

GPUCAL=("$PY" -c "from gpucal.cli import gpucal_main; gpucal_main()")  # the gpucal command, uninstalled
export PY

# ---------------------------------------------------------------- wheels, GPU or not
GPU=0
if [ "$DRY" = 0 ] && compgen -G "$REPO/.whl/*.whl" > /dev/null; then
  SITE=/tmp/gpucal-site
  phase wheels 120 0 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$REPO"/.whl/*.whl
  export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
  record wheels "skipped: $( [ "$DRY" = 1 ] && echo 'dry mode' || echo 'no .whl/ here')" "" 0 ""
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$DRY" = 0 ]; then
  PROBE=$(timeout 120 "$PY" -c "from gpucal.backends.select import probe_gpu; ok, why = probe_gpu(); print(why); raise SystemExit(0 if ok else 1)" 2>&1)
  if [ $? -eq 0 ]; then
    GPU=1
    record gpu_probe ok 0 0 "probe_gpu()"
  elif nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then  # a GPU is there and gpucal cannot use it
    record gpu_probe failed 1 0 "probe_gpu()"
  else
    record gpu_probe "skipped: no GPU" "" 0 "probe_gpu()"
  fi
else
  PROBE="dry mode asked for (--dry)"
  record gpu_probe "skipped: dry mode" "" 0 ""
fi
echo "$PROBE" | tail -n 5 > "$WORK/probe.txt"
echo "[gpu_check] GPU: $([ $GPU = 1 ] && echo yes || echo no) ($(tail -n 1 "$WORK/probe.txt"))"

# ---------------------------------------------------------------- phases
phase env 60 0 bash -c '
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  echo; "$PY" -VV; echo "PYTHONPATH=$PYTHONPATH"
  "$PY" -c "import numpy, scipy; print(\"numpy\", numpy.__version__, \"scipy\", scipy.__version__)"
  "$PY" -c "import cupy; cupy.show_config()" 2>&1 || echo "CuPy: not importable"
  "$PY" -m pip list 2>/dev/null | grep -i -E "cupy|nvidia|cuda|asdf|roman|rad|crds|gwcs|astropy|numpy|scipy" || true
  nproc; free -g 2>/dev/null || true'
phase info 90 0 "${GPUCAL[@]}" info
if [ "$GPU" = 1 ]; then
  phase kernels 150 0 "${GPUCAL[@]}" kernels --arch 90
else
  phase kernels 150 0 "${GPUCAL[@]}" kernels --arch 90 --no-warm
fi
# the GPU cases: marked gpu or parametrised "gpu" ("gpucal" in a name is no GPU test)
phase gpu_tests 180 1 env GPUCAL_REQUIRE_GPU=1 "$PY" -m pytest -q -rfEs -p no:cacheprovider \
  -k "gpu and not gpucal" --junitxml="$LOGS/gpu_tests.xml" tests/kernels tests/backends tests/test_pipeline_e2e.py
phase agreement 240 1 env GPUCAL_REQUIRE_GPU=1 "$PY" -m pytest -q -s -rA -p no:cacheprovider -m gpu \
  --junitxml="$LOGS/agreement.xml" tests/fullframe/test_device_agreement.py
mkdir -p "$WORK/bench"
if [ "$GPU" = 1 ]; then
  phase bench 300 0 "$PY" bench/suite.py --backends gpu,cpu --size 4096x4096 --nresultants 8 \
    --batch-sizes 1,4,16 --cpu-batch-sizes 1 --no-romancal --repeat 1 --timeout 240 \
    --workdir "$WORK/bench/work" --out "$WORK/bench/bench.json"
else
  # the same suite on a small frame, 'gpu' being the emulated device: every device code path of the
  # bench and the summary runs (device ms per step and per file), its figures mean nothing
  phase bench 180 0 env GPUCAL_EMULATE_GPU=1 "$PY" bench/suite.py --backends gpu,cpu --size 64x256 --nresultants 6 \
    --batch-sizes 1,2 --cpu-batch-sizes 2 --distinct 1 --no-warmup --no-romancal --repeat 1 --timeout 120 \
    --workdir "$WORK/bench/work" --out "$WORK/bench/bench.json"
fi

# ---------------------------------------------------------------- results
"$PY" "$REPO/bench/gpu_check_summary.py" --phases "$PHASES" --work "$WORK" --out "$OUTDIR" \
  --gpu "$GPU" --probe "$WORK/probe.txt" --budget "$BUDGET" --elapsed $(( $(date +%s) - START )) \
  > "$LOGS/summary.log" 2>&1 || echo "[gpu_check] the summary failed: see summary.log in logs.tar.gz"
cp "$LOGS/info.log" "$OUTDIR/info.txt" 2>/dev/null
[ -f "$WORK/bench/bench.json" ] && cp "$WORK/bench/bench.json" "$OUTDIR/bench.json"
[ -f "$WORK/bench/bench.png" ] && cp "$WORK/bench/bench.png" "$OUTDIR/bench.png"
# the bench's child logs are the first place to look when a run failed (its products are not kept)
if [ -d "$WORK/bench/work" ]; then
  mkdir -p "$LOGS/bench"
  (cd "$WORK/bench/work" && find . -name '*.log' -exec cp --parents {} "$LOGS/bench/" \;)
fi
tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs phases.tsv probe.txt
cat "$OUTDIR/summary.md" 2>/dev/null
# exit status: 0 when every phase that ran passed (skips are not failures)
STATUS=0
cut -f2 "$PHASES" | grep -q -E '^(failed|timed out)' && STATUS=1
rm -rf "$WORK"
exit $STATUS
