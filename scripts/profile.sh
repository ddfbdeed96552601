#!/usr/bin/env bash
# make profile SCENARIO=S0: one run of a bench scenario with `perf record`
# (DWARF call graphs, 499 Hz) attached to the release hookrelay while it works,
# then a flame graph SVG made with inferno (a maintained Rust port of the
# FlameGraph scripts). Everything goes to .bench/: perf-<scenario>.data, the
# folded stacks and flame-<scenario>.svg. perf comes from Debian's linux-perf
# (installed here when missing); inferno is installed once into .cache/bin.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scenario="${1:-S0}"
inferno_version=0.12.8

if ! command -v perf >/dev/null 2>&1; then
    echo "profile: perf is missing; installing linux-perf" >&2
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get install -y linux-perf
fi
if [[ ! -x .cache/bin/inferno-flamegraph || ! -x .cache/bin/inferno-collapse-perf ]]; then
    cargo install --locked inferno --version "$inferno_version" --root .cache
fi

source scripts/local-broker.sh
mkdir -p .bench
name="$(tr 'A-Z ' 'a-z-' <<<"$scenario")"
data=".bench/perf-$name.data"
svg=".bench/flame-$name.svg"
rm -f "$data"
cargo run --locked --release --example bench -- --scenario "$scenario" --repeat 1 --perf "$data" "${@:2}" 2>&1 \
    | tee ".bench/profile-$name.log"
[[ -s "$data" ]] || { echo "profile: perf wrote no $data (see .bench/profile-$name.log)" >&2; exit 1; }
perf script -i "$data" 2>/dev/null | .cache/bin/inferno-collapse-perf >".bench/perf-$name.folded"
.cache/bin/inferno-flamegraph --title "hookrelay, bench $scenario" <".bench/perf-$name.folded" >"$svg"
echo "profile: $svg ($(wc -c <"$svg") bytes; perf data in $data)"
