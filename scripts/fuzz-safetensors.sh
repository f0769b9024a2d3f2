#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang (libFuzzer + ASan + UBSan) and runs it.
# usage: scripts/fuzz-safetensors.sh [SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v clang++ >/dev/null || { echo "error: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
out=build-fuzz
mkdir -p "$out" "$out/corpus"
if [ ! -x "$out/fuzz_safetensors" ] || [ -n "$(find src/io src/util fuzz -newer "$out/fuzz_safetensors" -name '*.[ch]*' | head -1)" ]; then
  clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -D_GLIBCXX_USE_CXX11_ABI=1 -Isrc -I/usr/include/torch/csrc/api/include \
    fuzz/fuzz_safetensors.cpp src/io/safetensors.cpp src/util/error.cpp src/util/str.cpp src/util/fs.cpp \
    src/util/json.cpp src/util/log.cpp src/util/progress.cpp -ltorch_cpu -lc10 -o "$out/fuzz_safetensors"
fi
# Seeds: the committed corpus (small valid and invalid files).
exec "$out/fuzz_safetensors" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
  "$out/corpus" fuzz/corpus
