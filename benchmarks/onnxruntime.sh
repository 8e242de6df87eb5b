#!/usr/bin/env bash
# reidnet's CPU embedding next to what a deployer would pick instead, in one run on one machine:
# ONNX Runtime on the model exported by torch.onnx.export, ONNX Runtime on the file that
# reidnet-export writes from the same weights, eager PyTorch (its best of NCHW and
# channels_last), and int8: reidnet's (the residual trunk's convs on oneDNN, calibrated on
# random pictures; "-" for a family without one) and PyTorch's own (FX graph-mode static
# quantisation, onednn engine), each with its per-row cosine to float32 on the timed
# pictures. Interleaved rounds, best of each; img/s and reidnet / the others.
#
# ONNX Runtime is packaged in Debian 13 (python3-onnxruntime), so this runs in the LibTorch 2.x
# leg's root, on a build made there with the benchmarks:
#
#   bash .ci/test-libtorch2 --run 'cmake -S . -B build-libtorch2 -DREIDNET_BUILD_BENCHMARKS=ON &&
#       cmake --build build-libtorch2 && benchmarks/onnxruntime.sh build-libtorch2'
#   MODELS="ft_net osnet_x1_0" BATCHES="16 1" ROUNDS=3 benchmarks/onnxruntime.sh build-libtorch2
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/common/input_size.sh"
build=${1:-$root/build}
bench=$build/benchmarks/reidnet-bench
export_program=$build/examples/reidnet-export
python=${PYTHON:-/usr/bin/python3}
models=${MODELS:-"ft_net"}
batches=${BATCHES:-"16 1"}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
for program in "$bench" "$export_program"; do
  [[ -x $program ]] || { echo "onnxruntime.sh: $program not found; build with -DREIDNET_BUILD_BENCHMARKS=ON" >&2; exit 1; }
done
"$python" -c 'import onnxruntime' 2> /dev/null ||
  { echo "onnxruntime.sh: $python has no onnxruntime (python3-onnxruntime, Debian 13)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

iterations() { [[ $1 -eq 1 ]] && echo 40 || echo 6; }
best() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a ? b : a)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-"}'; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $threads threads;" \
     "LibTorch $("$python" -c 'import torch; print(torch.__version__)')," \
     "ONNX Runtime $("$python" -c 'import onnxruntime; print(onnxruntime.__version__)' 2> /dev/null)"
echo
echo "| model | batch | reidnet fp32 | reidnet bf16 | reidnet int8 (cosine) | ONNX Runtime, torch.onnx.export | ONNX Runtime, reidnet-export | PyTorch eager fp32 | PyTorch int8 (cosine) | reidnet fp32 / ORT (torch's file) | reidnet fp32 / ORT (reidnet's file) | reidnet fp32 / eager | reidnet int8 / fp32 | reidnet int8 / PyTorch int8 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for model in $models; do
  input_size "$model"
  # The Python model's weights, and reidnet-export's file of them.
  "$python" "$root/benchmarks/families.py" --model "$model" --batch-size 1 --iters 1 --rounds 0 \
    --save-weights "$work/$model.pth" "${size[@]}" > /dev/null
  "$export_program" --model "$model" --weights "$work/$model.pth" --out "$work/$model.onnx" \
    "${size[@]}" > /dev/null
  for batch in $batches; do
    iters=$(iterations "$batch")
    fp32=0 bf16=0 int8=0 int8_cosine=- ort=0 ort_reidnet=0 eager=0 torch_int8=0 torch_int8_cosine=-
    for ((round = 0; round < rounds; round++)); do
      for dtype in fp32 bf16 int8; do
        calibration=()
        [[ $dtype == int8 ]] && calibration=(--calibration-images 64)
        out=$("$bench" --model "$model" --mode embed --dtype "$dtype" --batch-size "$batch" --iters "$iters" \
                --threads "$threads" "${size[@]}" "${calibration[@]}" 2>&1) || out=""  # int8: refused without a trunk
        r=$(awk '/^throughput/ {print $2}' <<< "$out")
        [[ -n $r ]] || continue
        case $dtype in
          fp32) fp32=$(best "$fp32" "$r") ;;
          bf16) bf16=$(best "$bf16" "$r") ;;
          int8) int8=$(best "$int8" "$r")
                int8_cosine=$(sed -n 's/.*per-row cosine to float32 min \([0-9.]*\).*/\1/p' <<< "$out") ;;
        esac
      done
      out=$("$python" "$root/benchmarks/families.py" --model "$model" --dtype int8 --batch-size "$batch" \
              --iters "$iters" --rounds 1 --threads "$threads" "${size[@]}" 2> "$work/stderr") ||
        { cat "$work/stderr" >&2; exit 1; }
      torch_int8=$(best "$torch_int8" "$(awk '$1 == "result" && $2 == "pytorch_int8" {print $3}' <<< "$out")")
      torch_int8_cosine=$(awk '$1 == "fidelity" {print $4}' <<< "$out")
      # Debian's ONNX Runtime and onnx each register ONNX's schemas and print a line for every
      # clash to stderr, kept aside unless the run fails.
      out=$("$python" "$root/benchmarks/families.py" --model "$model" --batch-size "$batch" --iters "$iters" \
              --rounds 1 --threads "$threads" --onnxruntime --onnx "$work/$model.onnx" "${size[@]}" \
              2> "$work/stderr") || { grep -v '^Schema error\|^$' "$work/stderr" >&2; exit 1; }
      ort=$(best "$ort" "$(awk '$2 == "onnxruntime" {print $3}' <<< "$out")")
      ort_reidnet=$(best "$ort_reidnet" "$(awk '$2 == "onnxruntime_file" {print $3}' <<< "$out")")
      eager=$(best "$eager" "$(awk '$2 ~ /^eager/ {if ($3 > b) b = $3} END {print b}' <<< "$out")")
    done
    int8_cell="$int8 ($int8_cosine)"
    [[ $int8 == 0 ]] && int8_cell="-"  # no residual trunk: no int8 yet
    echo "| $model | $batch | $fp32 | $bf16 | $int8_cell | $ort | $ort_reidnet | $eager |" \
         "$torch_int8 (${torch_int8_cosine:--}) | $(ratio "$fp32" "$ort") | $(ratio "$fp32" "$ort_reidnet") |" \
         "$(ratio "$fp32" "$eager") | $(ratio "$int8" "$fp32") | $(ratio "$int8" "$torch_int8") |"
  done
done
