#!/usr/bin/env bash
# moeforge vs llama.cpp, side by side on the same models (issue 20). llama.cpp runs through its C API
# on node-llama-cpp 3's prebuilt CPU libraries with a persistent thread pool, as llama-bench and
# llama-cli run it (bench/llama_cpp_peer/peer.cpp). For every model directory, GGUF type and thread
# count it measures
#   decode:  greedy generation of 128 tokens after a 32-token prompt, tokens/s end to end
#            (prompt included, counted like `moeforge generate`: 128 tokens = 1 + 127 forwards);
#   prefill: one forward of 512 tokens on an empty KV cache, tokens/s;
# with moeforge and llama.cpp alternating, one process each per round, and prints the medians as a
# Markdown table together with the load average at the start and at the end.
#
#   bench/llama_cpp_peer.sh [--moeforge BIN] [--rounds 3] [--threads "1 2"] [--f16] [--text FILE] MODEL_DIR...
#
# The prompts are the first 32 / 512 token ids of FILE (default tests/data/corpus/kjv.txt) in the
# model's own tokenizer, given to both sides as ids. node-llama-cpp is installed like
# tests/gguf/check_llama_cpp.sh does (MOEFORGE_NLC_CACHE, default <dir of BIN>/node-llama-cpp); the
# llama.cpp headers of exactly that build and the peer binary go to <that dir>/../llama-cpp-peer/.
# Run it on a quiet machine: the numbers are only comparable within one run.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$src/build/moeforge"
rounds=3
threads_list="1 2"
dtypes="f32 bf16"
text="$src/tests/data/corpus/kjv.txt"
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --moeforge) bin="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads_list="$2"; shift 2 ;;
    --f16) dtypes="$dtypes f16"; shift ;;
    --text) text="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || { echo "usage: $0 [options] MODEL_DIR..." >&2; exit 2; }

skip() { echo "skipped: $*"; exit 0; }
die() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "$*" >&2; }
bin="$(realpath "$bin")"
[ -x "$bin" ] || die "no moeforge binary at $bin"
cache="${MOEFORGE_NLC_CACHE:-$(dirname "$bin")/node-llama-cpp}"
mf() { "$bin" -q "$@"; }

# --- llama.cpp: node-llama-cpp's libraries, the headers of the same source, the peer ------------
# shellcheck source=tests/gguf/node_llama_cpp.sh
. "$src/tests/gguf/node_llama_cpp.sh"
nlc_install "$cache"
peer_dir="$(dirname "$cache")/llama-cpp-peer/$nlc_version"
if [ ! -f "$peer_dir/include/llama.h" ]; then
  # Only include/ and ggml/include/ of the bundled source: the ABI of the prebuilt libraries.
  tmp="$peer_dir.tmp-$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  git clone -q --no-checkout "$nlc_bundle" "$tmp/src" || die "cannot clone $nlc_bundle"
  git -C "$tmp/src" archive HEAD include ggml/include | tar -x -C "$tmp" || die "cannot extract the headers"
  rm -rf "$tmp/src" "$peer_dir" && mkdir -p "$(dirname "$peer_dir")" && mv "$tmp" "$peer_dir"
fi
peer="$peer_dir/peer"
if [ ! -x "$peer" ] || [ "$src/bench/llama_cpp_peer/peer.cpp" -nt "$peer" ]; then
  lib() {  # NAME: the versioned file node-llama-cpp ships (libllama.v0.5.0.so) or the plain one
    local f
    for f in "$nlc_bins/$1".v*.so "$nlc_bins/$1.so"; do [ -f "$f" ] && { basename "$f"; return; }; done
    die "no $1 in $nlc_bins"
  }
  libllama="$(lib libllama)"
  libggml="$(lib libggml)"
  # rpath to node-llama-cpp's folder: the libraries and the CPU variants ggml loads at run time.
  g++ -std=c++17 -O2 -Wall -Wextra -o "$peer.tmp" "$src/bench/llama_cpp_peer/peer.cpp" \
    -I"$peer_dir/include" -I"$peer_dir/ggml/include" -L"$nlc_bins" \
    -l:"$libllama" -l:"$libggml" -l:libggml-base.so -ldl -Wl,-rpath,"$nlc_bins" || die "cannot build the peer"
  mv "$peer.tmp" "$peer"
fi

# --- moeforge's side ------------------------------------------------------------------------------
# moeforge_rate MODEL_DIR DTYPE THREADS MODE IDS -> "TOK_S GENERATED_IDS", measured like the peer:
# `moeforge generate --prompt-ids IDS --ignore-eos --warmup` (model load excluded, one untimed
# warm-up); decode: 128 greedy tokens / (prompt forward + 127 one-token steps); prefill: 512 / the
# prompt's forward (one token sampled). moeforge has no fp16 CPU dtype: f16 rows read n/a.
moeforge_rate() {
  local model="$1" dtype="$2" threads="$3" mode="$4" ids="$5" mdtype n=128
  case "$dtype" in f32) mdtype=float32 ;; bf16) mdtype=bfloat16 ;; *) echo "n/a -"; return ;; esac
  [ "$mode" = prefill ] && n=1
  "$bin" -q --threads "$threads" generate "$model" --prompt-ids "$ids" --max-new-tokens "$n" --temperature 0 \
    --ignore-eos --warmup --dtype "$mdtype" --json >"$work/mf.json" || die "moeforge generate failed on $model"
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (process.argv[2] === "prefill") console.log(j.prompt_tokens_per_second, "-");
    else console.log(j.tokens_per_second, j.ids.join(","))' "$work/mf.json" "$mode"
}

# --- helpers --------------------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/moeforge-peer.XXXXXX")"
trap 'rm -rf "$work"' EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
median() {  # numbers as arguments ("n/a" ignored) -> median or n/a
  printf '%s\n' "$@" | { grep -E '^[0-9.]+$' || true; } | sort -g |
    awk '{v[NR]=$1} END {if (!NR) print "n/a"; else if (NR%2) printf "%.2f\n", v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f\n", a/b; else print "n/a"}'; }
peer_rate() {  # GGUF THREADS MODE IDS -> "TOK_S GENERATED_IDS" (one measured run after a warm-up)
  "$peer" "$1" --threads "$2" --mode "$3" --reps 1 --prompt-ids "$4" >"$work/peer.json" ||
    die "peer failed on $1"
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(j.median_tok_s, j.generated_ids.length ? j.generated_ids.join(",") : "-")' "$work/peer.json"
}
same_ids() {  # MOEFORGE_IDS LLAMA_IDS -> yes | first differing position | n/a
  [ "$1" = "-" ] || [ "$2" = "-" ] && { echo "n/a"; return; }
  [ "$1" = "$2" ] && { echo "yes"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN {n=split(a,x,","); m=split(b,y,",");
    for (i=1; i<=n && i<=m; i++) if (x[i]!=y[i]) {print "differ at " i-1; exit}; print "lengths " n "/" m}'
}

# --- the runs --------------------------------------------------------------------------------------
load_start="$(loadavg)"
rows=()
for model in "${models[@]}"; do
  [ -f "$model/config.json" ] || die "$model is not a model directory"
  name="$(basename "$(realpath "$model")")"
  # Prompt ids from the model's own tokenizer (BOS as its post-processor adds it).
  ids_line="$(head -c 20000 "$text" | mf tokenize "$model" --file - --add-special --ids-only)" ||
    die "cannot tokenize $text with $model"
  read -r -a all_ids <<<"${ids_line%%$'\n'*}"
  [ ${#all_ids[@]} -ge 512 ] || die "$text gives fewer than 512 tokens for $model"
  ids_decode="$(IFS=,; echo "${all_ids[*]:0:32}")"
  ids_prefill="$(IFS=,; echo "${all_ids[*]:0:512}")"
  for dtype in $dtypes; do
    gguf="$work/$name-$dtype.gguf"
    mf convert "$model" --to gguf --outtype "$dtype" --out "$gguf" >/dev/null || die "convert $model --outtype $dtype failed"
    for threads in $threads_list; do
      for mode in decode prefill; do
        ids="$ids_decode"
        [ "$mode" = prefill ] && ids="$ids_prefill"
        mf_rates=() lc_rates=() mf_gen="-" lc_gen="-"
        for ((r = 1; r <= rounds; r++)); do
          log "$name $dtype threads=$threads $mode: round $r/$rounds"
          # Command substitutions (not `< <(...)`) so that a failure stops the script under set -e.
          res="$(moeforge_rate "$model" "$dtype" "$threads" "$mode" "$ids")"
          read -r rate gen <<<"$res"
          mf_rates+=("$rate"); [ "$r" -eq 1 ] && mf_gen="$gen"
          res="$(peer_rate "$gguf" "$threads" "$mode" "$ids")"
          read -r rate gen <<<"$res"
          lc_rates+=("$rate"); [ "$r" -eq 1 ] && lc_gen="$gen"
        done
        mf_med="$(median "${mf_rates[@]}")"
        lc_med="$(median "${lc_rates[@]}")"
        greedy="-"
        [ "$mode" = decode ] && greedy="$(same_ids "$mf_gen" "$lc_gen")"
        rows+=("| $name | $dtype | $threads | $mode | $mf_med | $lc_med | $(ratio "$mf_med" "$lc_med") | $greedy |")
        [ "$mode" = decode ] && log "  llama.cpp greedy ids: $lc_gen"
      done
    done
  done
done
load_end="$(loadavg)"

echo "$("$bin" --version 2>/dev/null | head -1) vs llama.cpp (node-llama-cpp $nlc_version, prebuilt CPU);" \
  "medians of $rounds alternating rounds; decode = 128 greedy tokens after 32 prompt tokens, end to end;" \
  "prefill = 512 tokens in one batch"
echo "load average (1/5/15 min): start $load_start, end $load_end"
echo
echo "| model | dtype | threads | mode | moeforge tok/s | llama.cpp tok/s | ratio | same greedy ids |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
