#!/usr/bin/env bash
# One GPU session (run on the GPU machine, from the repository root, after
# benchmarks/gpu/prepare_deps.sh here): builds reidnet against that machine's LibTorch 2.x
# (CUDA), runs the CUDA test cases, the CUDA speed comparison with Python on the same GPU, a
# short CUDA fine-tune of the toy data, then the whole test suite. Logs go to $OUT.
#   STAGES="tests speed train ctest" (default: all), CASES=... (compare_speed.sh cases)
set -uo pipefail
root=$PWD
deps=$root/.devdeps/root
out=${OUT:-/tmp/out}
stages=${STAGES:-"tests speed train ctest"}
mkdir -p "$out"
stage() { echo; echo "=== $* ($((SECONDS))s)"; }
wants() { [[ " $stages " == *" $1 "* ]]; }

stage environment
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  g++ --version | head -1; cmake --version | head -1
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())"
  echo "cores: $(nproc)"
} 2>&1 | tee "$out/env.txt"
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
# The Debian packages' CMake files name /usr: point them here.
grep -rl '"/usr' "$deps/usr/lib/x86_64-linux-gnu/cmake" "$deps/usr/lib/cmake" |
  xargs sed -i "s|\"/usr|\"$deps/usr|g"
export CMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'):$deps/usr"
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export TORCH_CUDA_ARCH_LIST=9.0 CMAKE_POLICY_VERSION_MINIMUM=3.5

stage build
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DREIDNET_BUILD_BENCHMARKS=ON \
  -DREIDNET_PYTHON="$(command -v python3)" -DCMAKE_CUDA_COMPILER="$nvcc_path" \
  >"$out/cmake.log" 2>&1 || { tail -60 "$out/cmake.log"; exit 1; }
timeout 330 cmake --build build-gpu -j "$(nproc)" -- -k 0 >"$out/build.log" 2>&1
echo "build rc=$?"
grep -E "error|FAILED" -A4 "$out/build.log" | head -60
tests=build-gpu/tests/reidnet_tests

if wants tests; then
  stage CUDA test cases, then the image and data tests
  timeout 120 $tests -tc="on CUDA*,GradScaler*,*SGD*" 2>&1 | tee "$out/cuda_tests.log" |
    grep -E "MESSAGE|ERROR|values|test cases"
  timeout 60 $tests -sf="*test_image.cpp,*test_data.cpp" 2>&1 | grep -E "ERROR|CRASH|test cases"
fi
if wants speed; then
  stage CUDA speed, reidnet vs Python on the same GPU
  DEVICE=cuda ROUNDS=1 THREADS=16 EMBED_ITERS=30 TRAIN_ITERS=15 PYTHON=python3 \
    CASES=${CASES:-"embed_fp32_b128 embed_fp16_b128 embed_bf16_b128 embed_fp16_b16 train_fp32_b32 train_fp16_b32 train_bf16_b32"} \
    timeout 300 bash benchmarks/compare_speed.sh build-gpu 2>&1 | tee "$out/cuda_speed.txt" | grep -A12 "^case"
fi
if wants train; then
  stage CUDA fp16 fine-tune of the toy data
  (timeout 120 bash -c '
    set -e
    build-gpu/examples/reidnet-toy-data --out /tmp/toy >/dev/null
    build-gpu/examples/reidnet-train --data /tmp/toy --out /tmp/run --device cuda --fp16 \
      --height 64 --width 32 --total-epoch 40 --lr 0.01 --batch-size 16 --warm-epoch 2 --workers 8
    build-gpu/examples/reidnet-test --data /tmp/toy --model-dir /tmp/run --device cuda --dtype fp16
    cp /tmp/run/train.log /tmp/run/train.jpg '"$out"'/') 2>&1 | tail -6
fi
if wants ctest; then
  stage whole test suite on LibTorch 2.x
  timeout 240 ctest --test-dir build-gpu -j 4 -E "fuzz" --output-on-failure >"$out/ctest.log" 2>&1
  echo "ctest rc=$?"
  grep -E "tests passed|\*\*\*|Passed" "$out/ctest.log" | tail -20
fi
stage done
