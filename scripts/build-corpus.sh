#!/usr/bin/env bash
# Build the moeforge reference corpus from the text that Debian packages ship.
#
#   scripts/build-corpus.sh [--out DIR] [--keep-work DIR]
#
# Downloads the packages with `apt-get download` into a temporary directory, unpacks them
# with `dpkg-deb -x` (nothing is installed; works as root or not), and cleans their text
# into DIR/{train,validation,test}.jsonl, DIR/manifest.json and DIR/tasks/*.jsonl
# (default DIR: data/corpus). Running it twice with the same package versions gives
# byte-identical output. See docs/corpus.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="data/corpus"
keep_work=""

usage() { sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }
           out="$2"; shift 2 ;;
    --keep-work) [ $# -ge 2 ] || { echo "error: --keep-work needs a directory" >&2; exit 2; }
           keep_work="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

for tool in apt-get dpkg-deb python3 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: build-corpus.sh needs '$tool' (a Debian system with apt and python3)" >&2
    exit 1
  }
done

# One package per domain source. bible-kjv carries the program that decodes the compressed
# text of bible-kjv-text; it is unpacked and run from the work directory, never installed.
PACKAGES=(
  dict-gcide            # dictionary
  wordnet-base          # lexicon
  bible-kjv-text        # scripture
  bible-kjv
  dict-foldoc           # computing
  dict-jargon
  fortunes-min          # humor
  fortunes
  libc6-dev             # code
  linux-libc-dev
  base-files            # legal (/usr/share/common-licenses)
  libsoftware-license-perl
  dict-freedict-eng-fra # translation
  dict-freedict-eng-deu
  dict-freedict-eng-spa
)

if [ -n "$keep_work" ]; then
  work="$keep_work"
  mkdir -p "$work"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/moeforge-corpus.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi
# apt drops root privileges to the _apt user for downloads; let it write here.
chmod 0755 "$work"
mkdir -p "$work/debs" "$work/root"
chmod 0777 "$work/debs"

download() { (cd "$work/debs" && apt-get download -q "${PACKAGES[@]}") >"$work/apt.log" 2>&1; }

echo "build-corpus: downloading ${#PACKAGES[@]} packages" >&2
if ! download; then
  echo "build-corpus: download failed, running apt-get update and retrying" >&2
  if ! apt-get update -q >>"$work/apt.log" 2>&1 || ! download; then
    echo "error: apt-get download failed (see $work/apt.log; apt-get update may need root)" >&2
    trap - EXIT
    exit 1
  fi
fi

# packages.json: name -> version, architecture, .deb sha256 (the only source of variation)
{
  echo "{"
  first=1
  for pkg in "${PACKAGES[@]}"; do
    deb=$(ls "$work/debs/${pkg}"_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || { echo "error: $work/debs: no .deb for $pkg after download" >&2; exit 1; }
    dpkg-deb -x "$deb" "$work/root/$pkg"
    version=$(dpkg-deb -f "$deb" Version)
    arch=$(dpkg-deb -f "$deb" Architecture)
    sum=$(sha256sum "$deb" | cut -d' ' -f1)
    [ $first -eq 1 ] || echo ","
    first=0
    printf '  "%s": {"version": "%s", "architecture": "%s", "deb": "%s", "deb_sha256": "%s"}' \
      "$pkg" "$version" "$arch" "$(basename "$deb")" "$sum"
  done
  echo
  echo "}"
} >"$work/packages.json"

# The KJV text ships compressed in the bible program's own format: let that program decode
# it (-f: one "Ge1:1 text" line per verse).
bible="$work/root/bible-kjv/usr/bin/bible"
if ! "$bible" -f -p "$work/root/bible-kjv-text/usr/lib" "gen1:1-rev22:21" \
     </dev/null >"$work/kjv.txt" 2>"$work/bible.log"; then
  echo "error: $bible: could not decode the KJV text ($(head -c 200 "$work/bible.log"))" >&2
  exit 1
fi

mkdir -p "$out"
python3 "$here/corpus/build_corpus.py" --root "$work/root" --packages "$work/packages.json" \
  --kjv "$work/kjv.txt" --out "$out"
