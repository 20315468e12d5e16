#!/usr/bin/env bash
# Issue 6 on one GPU in under nine minutes: the ETTh2 table (DLinear, iTransformer, PatchTST
# paper-training; four horizons), ETTh1 iTransformer at 720 with --itr 3 under both iTransformer recipes,
# and the ETTh1 PatchTST paper-training rows again. Independent trainings run as parallel processes (one
# CPU thread each, all on the one GPU); each writes its rows after every horizon and is stopped after
# LIMIT seconds, so the merge below always runs and keeps whatever finished.
# Usage: bash benchmarks/timeseries_ett_gpu.sh OUT_DIR [DATA_DIR]   (DATA_DIR default .data/ETT-small)
# Writes OUT_DIR/ett_gpu.md, OUT_DIR/ett_gpu.json and OUT_DIR/ett_logs.txt; prints the merged table.
# A quick CPU check of the plumbing: DEVICE=cpu EXTRA="--epochs 1 --max-batches 2" bash ... /tmp/x
set -u
out=${1:?usage: timeseries_ett_gpu.sh OUT_DIR [DATA_DIR]}
data=${2:-.data/ETT-small}
limit=${LIMIT:-470}
work=$(mktemp -d)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
read -r -a extra <<<"${EXTRA:-}"
bench=benchmarks/timeseries_ett.py

names=()
pids=()
job() {  # job NAME ARGS...: one benchmark process in the background
    local name=$1
    shift
    timeout "$limit" "$py" "$bench" --device "$device" --json "$work/$name.json" "${extra[@]}" "$@" >"$work/$name.log" 2>&1 &
    names+=("$name")
    pids+=($!)
}

for h in 096 192 336 720; do
    job "a_etth2_itransformer_$h" --data "$data/ETTh2.csv" --models itransformer --horizons "$((10#$h))" --itr 3
    job "b_etth2_patchtst_$h" --data "$data/ETTh2.csv" --models patchtst --horizons "$((10#$h))"
    if [ "${ETTH1_PATCHTST:-1}" = 1 ]; then  # the optional ETTh1 PatchTST reruns (ETTH1_PATCHTST=0: skip)
        job "e_etth1_patchtst_$h" --data "$data/ETTh1.csv" --models patchtst --horizons "$((10#$h))"
    fi
done
job c_etth2_dlinear --data "$data/ETTh2.csv" --models dlinear --itr 3
job d_etth1_itransformer_720 --data "$data/ETTh1.csv" --models itransformer --horizons 720 --itr 3
job d_etth1_itransformer_paper_720 --data "$data/ETTh1.csv" --models itransformer --horizons 720 --itr 3 \
    --itransformer-recipe itransformer-paper
status=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    case $rc in 0) word=done ;; 124) word="stopped after ${limit}s" ;; *) word="failed (exit $rc)" ;; esac
    status+=("${names[$i]}: $word")
done

mkdir -p "$out"
for log in "$work"/*.log; do
    printf '===== %s\n' "$(basename "$log")"
    cat "$log"
done >"$out/ett_logs.txt"
printf '%s\n' "${status[@]}" | tee -a "$out/ett_logs.txt"
shopt -s nullglob
results=("$work"/*.json)
if [ ${#results[@]} -eq 0 ]; then
    echo "no run finished a horizon; see $out/ett_logs.txt" >&2
    tail -n 20 "$out/ett_logs.txt" >&2
    exit 1
fi
echo "${#results[@]} of ${#pids[@]} processes wrote rows"
"$py" "$bench" --merge "${results[@]}" --out "$out/ett_gpu.md" --json "$out/ett_gpu.json"
