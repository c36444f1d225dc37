#!/usr/bin/env bash
# Installs the public client libraries that the end-to-end tests drive
# mediavault with, exactly as tests/clients/package-lock.json pins them
# (each package by version and sha512), for `make test`, which runs the tests
# after this:
#   - @great-detail/whatsapp, a WhatsApp Cloud API client from the npm
#     registry, for tests/whatsapp_client.rs (through
#     tests/clients/whatsapp_cloud.mjs).
# `npm ci` checks every package against its pinned hash and runs no install
# script. The packages go to target/client-tools/, in a directory named by the
# lock file's hash, so an unchanged lock file installs once and later runs
# take a moment; tests/clients/node_modules (not tracked) links there, so
# that Node finds the packages beside the programs that import them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

die() {
  printf 'client-tools: FAILED: %s\n' "$*" >&2
  exit 1
}

clients=tests/clients
lock=$clients/package-lock.json
# The oldest Node these packages run on (@great-detail/whatsapp 8.x).
node_major=20
node_minor=19

command -v node >/dev/null || die "node (>= $node_major.$node_minor) is needed to run $clients/*.mjs"
command -v npm >/dev/null || die "npm is needed once to install the packages of $lock"
version=$(node -p 'process.versions.node')
IFS=. read -r major minor _ <<<"$version"
if ((major < node_major || (major == node_major && minor < node_minor))); then
  die "node $version is older than $node_major.$node_minor, which $lock needs"
fi

hash=$(cat "$clients/package.json" "$lock" | sha256sum | cut -c1-16)
install=target/client-tools/npm-$hash

if [ ! -f "$install/installed" ]; then
  echo "client-tools: installing the packages of $lock into $install"
  mkdir -p target/client-tools
  work=$(mktemp -d target/client-tools/npm-install.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  cp "$clients/package.json" "$lock" "$work/"
  (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    die "npm ci of $lock (a package whose hash differs from the pinned one fails here too)"
  rm -rf "$install"
  mv "$work" "$install"
  trap - EXIT
  touch "$install/installed"
fi

# The link that Node resolves the programs' imports through (replacing a
# directory left there by a hand-run `npm install`).
link=$clients/node_modules
if [ -d "$link" ] && [ ! -L "$link" ]; then
  rm -rf "$link"
fi
ln -sfn "../../$install/node_modules" "$link"

# Loads each library as the programs do, so that a broken install fails here.
(cd "$clients" && node --input-type=module -e '
  const { default: Client } = await import("@great-detail/whatsapp");
  if (typeof Client !== "function") throw new Error("@great-detail/whatsapp exports no Client");
') || die "@great-detail/whatsapp does not load from $clients/node_modules"
echo "client-tools: ready ($install)"
