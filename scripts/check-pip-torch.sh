#!/usr/bin/env bash
# Builds moeforge against a pip PyTorch (CUDA) wheel and checks it there: the whole CTest suite on
# the CPU, then --device cuda against cpu (perplexity, eval, profile, greedy generation).
#
#   scripts/check-pip-torch.sh pack    # on a Debian bookworm machine: bundle the non-torch
#                                      # dependencies into .cudadeps/deps.tar.xz (~18 MB)
#   scripts/check-pip-torch.sh run     # on the CUDA machine (python3 with torch, nvcc, cmake,
#                                      # ninja, g++), from the repository root; logs go to $OUT
#
# `pack` exists for machines that have torch but no apt (the GPU machine lent to this project):
# the bookworm packages are unpacked under /tmp/deps there. With apt available, install the
# packages of scripts/install-deps.sh except libtorch-dev instead and skip the bundle.
set -euo pipefail
BUNDLE=.cudadeps/deps.tar.xz

pack() {
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download nlohmann-json3-dev libcli11-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 \
    libpcre2-32-0 libpcre2-posix3 libsentencepiece-dev libsentencepiece0 libicu-dev libicu72 libyaml-cpp-dev \
    libyaml-cpp0.7 coinor-libcbc-dev coinor-libcbc3 coinor-libcgl-dev coinor-libcgl1 coinor-libclp-dev \
    coinor-libclp1 coinor-libcoinutils-dev coinor-libcoinutils3v5 coinor-libosi-dev coinor-libosi1v5 \
    libmetis-dev libmetis5 libgtest-dev libbenchmark-dev libbenchmark1debian pkgconf pkgconf-bin libpkgconf3 \
    libblas3 liblapack3 libgfortran5 libquadmath0 zlib1g-dev libbz2-dev)
  mkdir -p "$tmp/root" .cudadeps
  for f in "$tmp"/*.deb; do dpkg -x "$f" "$tmp/root"; done
  rm -rf "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man"
  # Shared libraries suffice, except the test and benchmark frameworks (static only in Debian).
  find "$tmp/root" -name '*.a' ! -name 'libgtest*' ! -name 'libbenchmark*' -delete
  tar cJf "$BUNDLE" -C "$tmp/root" .
  rm -rf "$tmp"
  ls -la "$BUNDLE"
}

run() {
  local out=${OUT:-/tmp/check-pip-torch}; mkdir -p "$out"
  if [ -f "$BUNDLE" ]; then
    local d=/tmp/deps a=/tmp/deps/usr/lib/x86_64-linux-gnu
    mkdir -p $d && tar xJf "$BUNDLE" -C $d
    grep -rl '^prefix=/usr' $a/pkgconfig $d/usr/share/pkgconfig | xargs sed -i "s|^prefix=/usr|prefix=$d/usr|"
    export PATH=$d/usr/bin:$PATH PKG_CONFIG_PATH=$a/pkgconfig:$d/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$a:$a/blas:$a/lapack:${LD_LIBRARY_PATH:-} CMAKE_PREFIX_PATH=$d/usr
  fi
  local tp; tp=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  echo "== torch $(python3 -c 'import torch;print(torch.__version__)'), g++ $(g++ -dumpversion), $(cmake --version | head -1)"
  cmake -S . -B /tmp/b -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$tp;${CMAKE_PREFIX_PATH:-}" \
    -DMOEFORGE_BUILD_BENCH=OFF > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
  ninja -C /tmp/b > "$out/ninja.log" 2>&1 || { grep -E "error" "$out/ninja.log" | head -30; exit 1; }
  local b=/tmp/b/moeforge m=models/tiny
  for dev in cpu cuda; do
    echo "== $dev"
    $b perplexity $m --text tests/data/benchmarks/wikitext2/wiki.test.raw --context 256 --device $dev --json | grep perplexity
    $b generate $m --prompt "The king said" --max-new-tokens 24 --temperature 0 --dtype float32 --device $dev; echo
    $b eval $m --tasks arc_easy,piqa,winogrande --data-dir tests/data/benchmarks --limit 100 --device $dev 2>&1 | tail -6
  done
  if (cd /tmp/b && ctest -j"$(nproc)" --timeout 300 --output-on-failure > "$out/ctest.log" 2>&1); then
    tail -3 "$out/ctest.log"
  else
    grep -E "tests passed|Failed|SEGFAULT" "$out/ctest.log" | tail -20; exit 1
  fi
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
