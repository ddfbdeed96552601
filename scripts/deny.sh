#!/usr/bin/env bash
# Supply-chain check (`make deny`): cargo deny on advisories, bans, licences and
# sources, with the policy in deny.toml. Exits non-zero on any violation.
#
# cargo-deny is not on a fresh machine: it is built once (cargo install --locked,
# pinned version) into the tools cache and reused from there. The advisory
# database is never fetched: the RustSec snapshot kept beside the repository
# (../shared/advisory-db, plain files) is laid out on every run as the git
# checkout cargo-deny reads (deny.toml's db-path), and cargo deny runs with
# --frozen (--locked and --offline: nothing fetched, Cargo.lock as it is), after
# `cargo fetch --locked` has brought every platform's crates from the registry.
#
#   TOOLS_DIR   where built tools are kept (default <repo>/.cache/tools)
#   ADVISORY_DB       the advisory snapshot (default <repo>/../shared/advisory-db)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# 0.20.2 builds with rustc 1.88 or newer (its rust-version).
CARGO_DENY_VERSION=0.20.2
TOOL_ROOT="${TOOLS_DIR:-$ROOT/.cache/tools}/cargo-deny-$CARGO_DENY_VERSION"
SNAPSHOT="${ADVISORY_DB:-$ROOT/../shared/advisory-db}"
# deny.toml's db-path, and below it the folder cargo-deny names after db-urls'
# https://github.com/rustsec/advisory-db (its last path segment and a hash of the URL).
DB_ROOT="$ROOT/.cache/advisory-dbs"
DB="$DB_ROOT/advisory-db-3157b0e258782691"

log() { echo "deny: $*" >&2; }

if [[ ! -x "$TOOL_ROOT/bin/cargo-deny" ]]; then
    log "building cargo-deny $CARGO_DENY_VERSION into $TOOL_ROOT (once; a few minutes)"
    started=$SECONDS
    cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION" --root "$TOOL_ROOT"
    log "built in $((SECONDS - started)) s"
fi

[[ -f "$SNAPSHOT/SNAPSHOT" && -d "$SNAPSHOT/crates" ]] || {
    log "no advisory database snapshot at $SNAPSHOT (set ADVISORY_DB)"
    exit 1
}
# The snapshot's files are read-only and it has no git history: copy it, make it
# one commit dated as the snapshot, and let cargo-deny read that.
rm -rf "$DB_ROOT"
mkdir -p "$DB"
cp -R "$SNAPSHOT/." "$DB/"
chmod -R u+w "$DB"
snapshot_date="$(grep -o '[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$DB/SNAPSHOT" | head -n1)"
git_quiet=(-c init.defaultBranch=main -c user.name=hookrelay -c user.email=deny@hookrelay.invalid
    -c commit.gpgsign=false -c core.hooksPath=/dev/null)
git "${git_quiet[@]}" -C "$DB" init -q
git "${git_quiet[@]}" -C "$DB" add -A
GIT_COMMITTER_DATE="${snapshot_date:-now}T00:00:00Z" GIT_AUTHOR_DATE="${snapshot_date:-now}T00:00:00Z" \
    git "${git_quiet[@]}" -C "$DB" commit -q --no-verify -m "$(head -n1 "$DB/SNAPSHOT")"
advisories=$(find "$DB/crates" "$DB/rust" -name '*.md' | wc -l)
if [[ -n "$snapshot_date" ]]; then
    age_days=$((($(date -u +%s) - $(date -u -d "$snapshot_date" +%s)) / 86400))
    log "advisory database: RustSec snapshot of $snapshot_date ($age_days days old), $advisories advisories"
else
    log "advisory database: RustSec snapshot (undated), $advisories advisories"
fi

# cargo deny reads every platform's crates (cargo metadata), and --frozen
# fetches none: a build fetches only this platform's, so fetch the rest first
# (from the crate registry; the advisory database is still never fetched).
cargo fetch --locked --quiet
PATH="$TOOL_ROOT/bin:$PATH" cargo deny --frozen check --show-stats \
    advisories bans licenses sources
