#!/usr/bin/env bash
# Installs every Debian package moeforge needs. Idempotent, non-interactive, quiet on success.
# Fails loudly when the active libblas.so.3 is not OpenBLAS (netlib BLAS makes fp32 GEMM ~20x slower).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  python3 gzip            # corpus builder (scripts/build-corpus.sh) and its test
  libtorch-dev            # tensor + autograd core (1.13 on bookworm)
  libopenblas0-openmp     # fast BLAS behind libtorch's fp32 GEMM, on libtorch's own OpenMP pool
  libgloo-dev             # c10d Gloo headers (distributed on CPU)
  python3-torch           # torchrun, the launcher the distributed tests use (and reference checks)
  nlohmann-json3-dev      # JSON
  libcli11-dev            # command line
  libpcre2-dev            # tokenizer regexes (Llama-3/Qwen2 need look-ahead)
  libsentencepiece-dev    # tokenizer.model (Llama-2, Mistral)
  libicu-dev              # tokenizer normalizers (NFC/NFKC, lower-casing)
  libyaml-cpp-dev         # custom evaluation tasks
  coinor-libcbc-dev       # HEMoE MIP
  libmetis-dev            # co-activation graph partition
  libgtest-dev libbenchmark-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  log=$(mktemp)
  if ! { $SUDO apt-get update -qq && \
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get failed" >&2
    exit 1
  fi
  rm -f "$log"
fi

# The OpenMP build of OpenBLAS must be the active BLAS (and LAPACK / libopenblas.so.0). The
# pthread build keeps its own thread pool, which fights libgomp's for the cores: on 2 cores fp32
# evaluation ran 1.3x slower with it, and slower with 2 threads than with 1.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for alt in "libblas.so.3-$arch" "liblapack.so.3-$arch" "libopenblas.so.0-$arch"; do
  candidate=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
  if [ -n "$candidate" ]; then $SUDO update-alternatives --set "$alt" "$candidate" >/dev/null; fi
done
active=$(update-alternatives --query "libblas.so.3-$arch" 2>/dev/null | awk '/^Value:/{print $2}')
case "$active" in
  *openblas-openmp*) ;;
  *) echo "install-deps: ERROR: active libblas.so.3 is '${active:-none}', not OpenBLAS (OpenMP); fp32 GEMM would be slow" >&2
     exit 1 ;;
esac
