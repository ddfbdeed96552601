#!/usr/bin/env bash
# make docs: the handbook (docs/) built with mdBook into docs/book, then its
# internal links checked (scripts/linkcheck.py). mdBook is installed from the
# crate registry into .cache/mdbook the first time (pinned; rebuilt only when
# missing or another version), or into $TOOLS_DIR/mdbook-<version> when
# that is set (CI keeps built tools there, outside its fresh clones).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MDBOOK_VERSION=0.5.4   # needs rustc 1.88 or newer
ROOT_DIR=.cache/mdbook
if [[ -n "${TOOLS_DIR:-}" ]]; then
    ROOT_DIR="$TOOLS_DIR/mdbook-$MDBOOK_VERSION"
fi
MDBOOK="$ROOT_DIR/bin/mdbook"
# One already on PATH at the pinned version will do (no build).
if [[ "$(mdbook --version 2>/dev/null)" == "mdbook v$MDBOOK_VERSION" ]]; then
    MDBOOK=mdbook
elif ! [[ -x "$MDBOOK" ]] || [[ "$("$MDBOOK" --version)" != "mdbook v$MDBOOK_VERSION" ]]; then
    echo "== installing mdbook $MDBOOK_VERSION into $ROOT_DIR (once)"
    cargo install --locked mdbook --version "$MDBOOK_VERSION" --no-default-features --features search \
        --root "$ROOT_DIR" --force
fi
"$MDBOOK" build docs
python3 scripts/linkcheck.py docs/book
