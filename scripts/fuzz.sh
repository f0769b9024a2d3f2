#!/usr/bin/env bash
# libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer run of one parser's fuzz target
# (fuzz/fuzz_<target>.cpp), seeded from fuzz/corpus/<target>; the grown corpus is kept in
# build-fuzz/corpus/<target>. The first run configures build-fuzz with clang (MOEFORGE_FUZZ=ON:
# the whole library instrumented; the same directory builds the sanitized unit tests).
#
# usage: scripts/fuzz.sh TARGET [SECONDS=60]      targets: ls fuzz/fuzz_*.cpp
#        scripts/fuzz.sh all [SECONDS]            every target in turn
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET|all [SECONDS]}
secs=${2:-60}
command -v clang++ >/dev/null || { echo "error: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
out=build-fuzz
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DMOEFORGE_FUZZ=ON \
    -DMOEFORGE_BUILD_BENCH=OFF >"$out.cmake.log" 2>&1 || { cat "$out.cmake.log"; exit 1; }
fi
if [ "$target" = all ]; then
  targets=$(ls fuzz/fuzz_*.cpp | sed 's|fuzz/fuzz_||; s|\.cpp$||')
else
  [ -f "fuzz/fuzz_$target.cpp" ] || { echo "error: fuzz/fuzz_$target.cpp: no such fuzz target" >&2; exit 2; }
  targets=$target
fi
for t in $targets; do
  cmake --build "$out" --target "fuzz_$t" -j"${JOBS:-2}"
  mkdir -p "$out/corpus/$t"
  echo "== fuzz_$t: $secs s"
  # -timeout: one input running past 10 s is a finding (a hang); -rss_limit_mb: so is 2 GiB.
  "$out/fuzz_$t" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/" "$out/corpus/$t" "fuzz/corpus/$t"
done
