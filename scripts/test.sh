#!/usr/bin/env bash
# Runs preserve's whole test suite on a fresh machine: installs what the tests need (GNU tar, zstd, sha256sum,
# python3 with the `bagit` validator from PyPI, redis-server and redis-cli, PostgreSQL's server binaries and psql,
# Alertmanager for the sidecar's end-to-end test, OpenSSH's and OpenSSL's command-line tools for sealed bundles,
# Chromium for the report's browser test,
# and two S3 servers for off-host storage: Garage from crates.io and moto's from PyPI), then runs every test with
# cargo-nextest (cargo test if absent).
# Tests start their own servers.
# Usage: scripts/test.sh [extra nextest/cargo-test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have tar || missing+=(tar)
have zstd || missing+=(zstd)
have sha256sum || missing+=(coreutils)
have python3 || missing+=(python3 python3-pip)
have ps || missing+=(procps)
[ -x /usr/bin/time ] || missing+=(time)
have curl || missing+=(curl)
have sh || missing+=(dash)
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || missing+=(postgresql)
have psql || missing+=(postgresql-client)
have runuser || missing+=(util-linux)
have prometheus-alertmanager || missing+=(prometheus-alertmanager)
# Sealed bundles are checked with the real OpenSSH (ssh-keygen -Y verify, ssh-agent, ssh-add) and OpenSSL
# (openssl ts -reply as the test TSA, openssl ts -verify); the custody recipe of docs/sealing.md uses bash and sed.
{ have ssh-keygen && have ssh-agent && have ssh-add; } || missing+=(openssh-client)
have openssl || missing+=(openssl)
have sed || missing+=(sed)
# The benchmark's smoke test copies a bundle to S3 with Debian's rclone (the baseline of the upload pair).
have rclone || missing+=(rclone)
# Encrypted bundles are opened with Debian's age (age -d, age-keygen).
{ have age && have age-keygen; } || missing+=(age)
# The report is opened in a real browser, headless, with no network (tests/report.rs); unshare is util-linux's.
{ have chromium || have chromium-browser; } || missing+=(chromium)
have unshare || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if ! have bagit.py; then
  echo "test.sh: installing the bagit validator from PyPI" >&2
  python3 -m pip install -q bagit || python3 -m pip install -q --break-system-packages bagit
  hash -r
fi
# pip may install it for the user only (its scripts then go to the user base's bin, often not on PATH).
if ! have bagit.py; then
  user_bin="$(python3 -m site --user-base)/bin"
  [ -x "$user_bin/bagit.py" ] && export PATH="$PATH:$user_bin"
fi
have bagit.py || { echo "test.sh: bagit.py is still not on PATH" >&2; exit 1; }

# Off-host storage is tested against two real S3 servers (tests/support/s3.rs): Garage, built from crates.io once
# (about 10-20 minutes on two cores), and moto's S3 server from PyPI.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! have garage; then
  echo "test.sh: installing Garage (cargo install garage --locked; this takes a while once)" >&2
  cargo install garage --locked --quiet
fi
# 5.2.6 or later: earlier ones answer CompleteMultipartUpload with an XML root the AWS SDK for Rust refuses.
moto_ok() { have moto_server && python3 -c 'import moto, sys; sys.exit(tuple(map(int, moto.__version__.split(".")[:3])) < (5, 2, 6))' 2>/dev/null; }
if ! moto_ok; then
  echo "test.sh: installing moto's S3 server from PyPI" >&2
  python3 -m pip install -q 'moto[server]>=5.2.6' || python3 -m pip install -q --break-system-packages 'moto[server]>=5.2.6'
  hash -r
fi
if ! have moto_server; then
  user_bin="$(python3 -m site --user-base)/bin"
  [ -x "$user_bin/moto_server" ] && export PATH="$PATH:$user_bin"
fi
have moto_server || { echo "test.sh: moto_server is still not on PATH" >&2; exit 1; }

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
