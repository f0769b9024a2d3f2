#!/usr/bin/env bash
# GGUF export checked against real llama.cpp (docs/gguf.md). Converts models/tiny and small random
# checkpoints of every exportable family with `moeforge convert --to gguf`, loads each GGUF in
# llama.cpp through node-llama-cpp 3 (its prebuilt CPU libraries) and compares with moeforge on the
# source directory (tests/gguf/check.mjs): token ids on text sets, next-token log-probabilities
# (1e-3 for f32; 99th percentile 2e-2 for bf16) and rolling perplexity (0.1% for f32). Also checks
# the refusals and that `moeforge info FILE.gguf` reads what was written.
#
#   tests/gguf/check_llama_cpp.sh [MOEFORGE_BIN]      (default build/moeforge)
#
# node-llama-cpp is installed with npm into <dir of MOEFORGE_BIN>/node-llama-cpp the first time
# (about 85 MB: the package and the CPU binaries of this platform only; MOEFORGE_NLC_CACHE
# overrides the place). Prints one "skipped: <reason>" line and exits 0 when Node.js >= 20 / npm
# are missing or the npm registry cannot be reached; exits 1 on any disagreement.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$(realpath "${1:-$src/build/moeforge}")"
threads="${MOEFORGE_CHECK_THREADS:-2}"
cache="${MOEFORGE_NLC_CACHE:-$(dirname "$bin")/node-llama-cpp}"

skip() { echo "skipped: $*"; exit 0; }
die() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no moeforge binary at $bin"

# --- node-llama-cpp --------------------------------------------------------------------------
# shellcheck source=tests/gguf/node_llama_cpp.sh
. "$src/tests/gguf/node_llama_cpp.sh"
nlc_install "$cache"
# ES modules resolve packages from the importing file's directory: run the check from the cache.
cp "$src/tests/gguf/check.mjs" "$cache/check.mjs"

# --- helpers ---------------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/moeforge-gguf.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=0
mf() { "$bin" -q --threads "$threads" "$@"; }
convert() {  # DIR OUTTYPE FILE
  mf convert "$1" --to gguf --outtype "$2" --out "$3" || die "convert $1 --outtype $2 failed"
}
check() {  # GGUF MODEL_DIR OUTTYPE [check.mjs options]
  local gguf="$1" model="$2" outtype="$3"
  shift 3
  node "$cache/check.mjs" --gguf "$gguf" --model "$model" --moeforge "$bin" --outtype "$outtype" \
    --threads "$threads" "$@" || failed=1
}
init() {  # CONFIG OUT STD TOKENIZER_DIR
  local tok=()
  [ -n "${4:-}" ] && tok=(--tokenizer "$4")
  mf init --config "$1" --out "$2" --dtype bf16 --init-std "$3" --seed 1 "${tok[@]}" || die "init $1 failed"
}
expect_error() {  # EXIT_CODE NEEDLE CMD...: one line on stderr containing NEEDLE, that exit code
  local code="$1" needle="$2" rc=0
  shift 2
  "$@" >"$work/stdout" 2>"$work/stderr" || rc=$?
  local lines
  lines="$(grep -vc '^Run .moeforge --help. for usage.$' "$work/stderr" || true)"
  if [ "$rc" -ne "$code" ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$needle" "$work/stderr"; then
    echo "FAIL: '$*' exited $rc (want $code) with: $(cat "$work/stderr")"
    failed=1
  else
    echo "ok: refused: $(head -1 "$work/stderr")"
  fi
}

texts="$src/tests/gguf/texts.json"
vectors="$src/tests/data/tokenizers/vectors"
kjv="$src/tests/data/corpus/kjv.txt"
configs="$src/tests/gguf/configs"

# --- models/tiny: f32, bf16, q8_0 ------------------------------------------------------------
for t in f32 bf16 q8_0; do convert "$src/models/tiny" "$t" "$work/tiny-$t.gguf"; done
check "$work/tiny-f32.gguf" "$src/models/tiny" f32 --label tiny-f32 \
  --texts "$texts,$vectors/ggml-vocab-llama-bpe.gguf.inp" --ppl-text "$kjv" --max-chars 3000
check "$work/tiny-bf16.gguf" "$src/models/tiny" bf16 --label tiny-bf16 --ppl-text "$kjv" --max-chars 3000
check "$work/tiny-q8_0.gguf" "$src/models/tiny" q8_0 --label tiny-q8_0 --ppl-text "$kjv" --max-chars 3000
mf info "$work/tiny-f32.gguf" >"$work/info.txt" && grep -q "^architecture  llama" "$work/info.txt" &&
  grep -q "llama-bpe" "$work/info.txt" && echo "ok: moeforge info reads the GGUF" ||
  { echo "FAIL: moeforge info on the GGUF:"; cat "$work/info.txt"; failed=1; }

# --- models/tiny-mixtral (trained): f32 exact; bf16 by perplexity (see docs/gguf.md: llama.cpp's
# bf16 activations flip near-tied routing decisions of the trained router at a few positions) --
convert "$src/models/tiny-mixtral" f32 "$work/tiny-mixtral-f32.gguf"
convert "$src/models/tiny-mixtral" bf16 "$work/tiny-mixtral-bf16.gguf"
check "$work/tiny-mixtral-f32.gguf" "$src/models/tiny-mixtral" f32 --label tiny-mixtral-f32 --ppl-text "$kjv" \
  --max-chars 3000
check "$work/tiny-mixtral-bf16.gguf" "$src/models/tiny-mixtral" bf16 --label tiny-mixtral-bf16 --ppl-text "$kjv" \
  --max-chars 3000 --tol 0.5

# --- MoE families: f32 on sharp random weights, bf16 on mild ones ----------------------------
# (bf16 rounding of the activations flips near-tied routing decisions of sharp random routers.)
for m in mixtral qwen2_moe olmoe; do
  init "$configs/$m.json" "$work/$m-sharp" 0.2 "$src/models/tiny"
  init "$configs/$m.json" "$work/$m-mild" 0.02 "$src/models/tiny"
  convert "$work/$m-sharp" f32 "$work/$m-f32.gguf"
  convert "$work/$m-mild" bf16 "$work/$m-bf16.gguf"
  check "$work/$m-f32.gguf" "$work/$m-sharp" f32 --label "$m-f32" --ppl-text "$kjv" --max-chars 1500
  check "$work/$m-bf16.gguf" "$work/$m-mild" bf16 --label "$m-bf16" --ppl-text "$kjv" --max-chars 1500
done

# --- a moeforge split that is Mixtral-equivalent (linear router, renormalised gates) ---------
mf split "$src/models/tiny" --method random --experts 4 --top-k 2 --router linear --gate renorm \
  --out "$work/tiny-split" >/dev/null || die "split failed"
convert "$work/tiny-split" f32 "$work/tiny-split.gguf"
check "$work/tiny-split.gguf" "$work/tiny-split" f32 --label moeforge-split-f32 --ppl-text "$kjv" --max-chars 1500

# --- dense families and the other tokenizers ---------------------------------------------------
init "$configs/qwen2.json" "$work/qwen2" 0.2 "$src/models/tiny"
convert "$work/qwen2" f32 "$work/qwen2.gguf"
check "$work/qwen2.gguf" "$work/qwen2" f32 --label qwen2-f32 --ppl-text "$kjv" --max-chars 1500
# GPT-2 with milder weights: llama.cpp's CPU GELU is a lookup table over fp16 inputs (GGML_GELU_FP16),
# whose rounding alone moves log-probs by ~1e-3 when the activations are as large as std 0.2 makes them.
init "$configs/gpt2.json" "$work/gpt2" 0.05 "$src/tests/data/tokenizers/gpt2"
convert "$work/gpt2" f32 "$work/gpt2.gguf"
check "$work/gpt2.gguf" "$work/gpt2" f32 --label gpt2-f32 --texts "$texts,$vectors/ggml-vocab-gpt-2.gguf.inp" \
  --ppl-text "$kjv" --max-chars 1500
init "$configs/llama3.json" "$work/llama3" 0.2 "$src/tests/data/tokenizers/llama3"
convert "$work/llama3" f32 "$work/llama3.gguf"
check "$work/llama3.gguf" "$work/llama3" f32 --label llama3-tokenizer-f32 \
  --texts "$texts,$vectors/ggml-vocab-llama-bpe.gguf.inp" --ppl-text "$kjv" --max-chars 1500
init "$configs/llama2_spm.json" "$work/llama2spm" 0.2 "$src/tests/data/tokenizers/llama2-spm"
convert "$work/llama2spm" f32 "$work/llama2spm.gguf"
check "$work/llama2spm.gguf" "$work/llama2spm" f32 --label llama2-spm-f32 \
  --texts "$texts,$vectors/ggml-vocab-llama-spm.gguf.inp" --ppl-text "$kjv" --max-chars 1500

# --- refusals: one line, nothing written -------------------------------------------------------
mf split "$src/models/tiny" --method random --experts 4 --top-k 2 --out "$work/tiny-unit" >/dev/null ||
  die "split failed"
expect_error 1 "router.gate unit" "$bin" -q convert "$work/tiny-unit" --to gguf --out "$work/unit.gguf"
[ ! -e "$work/unit.gguf" ] || { echo "FAIL: a refused conversion wrote $work/unit.gguf"; failed=1; }
expect_error 1 "norm_topk_prob" "$bin" -q convert "$src/models/tiny-qwen-moe" --to gguf --out "$work/tq.gguf"
mkdir -p "$work/outdir"
expect_error 1 "is a directory" "$bin" -q convert "$src/models/tiny" --to gguf --out "$work/outdir"
echo "my notes" >"$work/notes.txt"
expect_error 1 "not a GGUF file" "$bin" -q convert "$src/models/tiny" --to gguf --out "$work/notes.txt"
[ "$(cat "$work/notes.txt")" = "my notes" ] || { echo "FAIL: a user's file was overwritten"; failed=1; }
expect_error 2 "--outtype" "$bin" -q convert "$src/models/tiny" --to gguf --outtype q4_k --out "$work/x.gguf"
leftovers="$(find "$work" -maxdepth 1 -name '*.tmp-*' | wc -l)"
[ "$leftovers" -eq 0 ] || { echo "FAIL: temporary files left behind"; failed=1; }

[ "$failed" -eq 0 ] && echo "ok: GGUF export agrees with llama.cpp" || { echo "FAIL: see above"; exit 1; }
