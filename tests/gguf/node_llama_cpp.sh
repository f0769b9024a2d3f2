# shellcheck shell=bash disable=SC2034  # the nlc_* variables are results for the caller
# node-llama-cpp 3 (its prebuilt CPU build of llama.cpp), installed with npm into a cache folder.
# Sourced by tests/gguf/check_llama_cpp.sh and bench/llama_cpp_peer.sh; the caller defines
# `skip REASON` (prerequisite missing: report and stop) and `die REASON` (a real failure).
#
#   nlc_install CACHE   installs node-llama-cpp@3 into CACHE unless it is there (about 85 MB: the
#                       package and the CPU binaries of this platform only); sets nlc_platform
#                       (linux-x64 | linux-arm64), nlc_version, nlc_bins (the folder of libllama,
#                       libggml*, llama-addon.node) and nlc_bundle (the llama.cpp source of that
#                       build, a git bundle).

nlc_install() {
  local cache="$1"
  command -v node >/dev/null && command -v npm >/dev/null ||
    skip "Node.js and npm are not installed (node-llama-cpp needs Node.js >= 20 and npm)"
  [ "$(node -p 'Number(process.versions.node.split(".")[0])')" -ge 20 ] ||
    skip "Node.js $(node --version) is too old for node-llama-cpp 3 (needs >= 20)"
  case "$(uname -m)" in
    x86_64) nlc_platform=linux-x64 ;;
    aarch64) nlc_platform=linux-arm64 ;;
    *) skip "node-llama-cpp has no prebuilt llama.cpp for $(uname -m)" ;;
  esac
  if [ ! -f "$cache/node_modules/node-llama-cpp/package.json" ] ||
    [ ! -d "$cache/node_modules/@node-llama-cpp/$nlc_platform" ]; then
    timeout 60 npm view node-llama-cpp@3 version >/dev/null 2>&1 ||
      skip "npm cannot reach the registry to install node-llama-cpp@3"
    # Installed next to the final place and renamed into it: an interrupted install leaves no cache.
    local staging="$cache.tmp-$$" version
    rm -rf "$staging" && mkdir -p "$staging"
    _nlc_npm() {
      npm install --prefix "$staging" --no-audit --no-fund --ignore-scripts --omit=optional "$@" >>"$staging.log" 2>&1 ||
        { cat "$staging.log" >&2; rm -rf "$staging"; die "npm install $* failed"; }
    }
    _nlc_npm node-llama-cpp@3
    version="$(node -p "require('$staging/node_modules/node-llama-cpp/package.json').version")"
    _nlc_npm "@node-llama-cpp/$nlc_platform@$version"  # this platform's CPU build only (not CUDA/Vulkan)
    rm -rf "$cache" && mv "$staging" "$cache" && rm -f "$staging.log"
    echo "installed node-llama-cpp $version into $cache"
  fi
  nlc_version="$(node -p "require('$cache/node_modules/node-llama-cpp/package.json').version")"
  nlc_bins="$cache/node_modules/@node-llama-cpp/$nlc_platform/bins/$nlc_platform"
  nlc_bundle="$cache/node_modules/node-llama-cpp/llama/gitRelease.bundle"
}
