#!/usr/bin/env bash
# The demo job: the dense -> MoE pipeline on the bundled tiny model (docs/quickstart.md).
# Builds the reference corpus when it is missing (Debian packages via apt-get download), shows
# what models/tiny is, generates a few tokens, then runs `moeforge quickstart`.
set -euo pipefail
build=${1:-build}
bin="$build/moeforge"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f data/corpus/validation.jsonl ] || scripts/build-corpus.sh --out data/corpus
"$bin" info models/tiny
"$bin" generate models/tiny --prompt "And God said," --max-new-tokens 24 --seed 1
"$bin" quickstart --out "$build/quickstart"
