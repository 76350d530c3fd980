#!/usr/bin/env bash
# Runs the README's install command, exactly as the README gives it (read from its "## Install" section, so the two
# cannot drift apart), into a temporary root, and checks that `preserve --version` then works from the PATH and
# names this checkout's version. CI runs it after the test suite (.ci/run).
# Usage: scripts/install-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command=$(awk '/^## Install/{s=1; next} s && /^## /{exit} s && /^cargo install /{print; exit}' README.md)
[ -n "$command" ] || { echo "install-check: no 'cargo install' line in the README's Install section" >&2; exit 1; }
case $command in
  *";"* | *"&"* | *"|"* | *'$'* | *'`'*) echo "install-check: the README's install line is not one plain command: $command" >&2; exit 1 ;;
esac
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "install-check: $command (into $root)" >&2
# The README's words, run as a user would run them; only where the binary goes is chosen here.
CARGO_INSTALL_ROOT=$root bash -c "$command"
want=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
got=$(env PATH="$root/bin:$PATH" bash -c 'hash -r; command -v preserve >/dev/null && preserve --version')
echo "install-check: $got" >&2
[ "$got" = "preserve $want" ] || { echo "install-check: expected 'preserve $want' from the PATH, got '$got'" >&2; exit 1; }
[ "$(env PATH="$root/bin:$PATH" bash -c 'command -v preserve')" = "$root/bin/preserve" ] \
  || { echo "install-check: the preserve on the PATH is not the one just installed" >&2; exit 1; }
