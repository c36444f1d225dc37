#!/usr/bin/env bash
# Builds the TEST STAND-INS for the base images that deploy/Dockerfile and
# deploy/compose/compose.yaml name, on a machine that cannot pull images:
# a Debian bookworm root from debootstrap, then one podman build per
# *.Containerfile here. Each stand-in is tagged with the exact name the
# deploy artifacts use (so they build and run unchanged, with --pull=never)
# and with localhost/mediavault-test-standin/<name>; each carries a
# "TEST STAND-IN" description label. They are not production images.
#
#   deploy/test-standins/build.sh [debian rust distroless postgres garage aws-cli]
#
# Needs root, podman and debootstrap (scripts/deploy-check.sh installs them).
# Environment: CONTAINERS_CONF as for podman; DEBIAN_MIRROR (default: the
# first bookworm mirror in /etc/apt, else deb.debian.org); RUST_TOOLCHAIN_DIR
# (default: the rustup toolchain 1.95.0, else stable); GARAGE_BIN (default:
# garage on PATH, else ~/.cargo/bin/garage); HOST_CA_BUNDLE, the CA bundle the
# build stage trusts (default: this machine's, /etc/ssl/certs/ca-certificates.crt,
# so that a TLS-inspecting proxy the machine trusts also works); STANDIN_WORK, where the root
# file system and build contexts go (default target/deploy-check/standins).
# An image already present is kept; STANDIN_REBUILD=1 builds again.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${STANDIN_WORK:-$root/target/deploy-check/standins}
mkdir -p "$work"

log() { printf 'test-standins: %s\n' "$*" >&2; }
die() {
  printf 'test-standins: FAILED: %s\n' "$*" >&2
  exit 1
}

prefix=localhost/mediavault-test-standin
base=$prefix/debian:bookworm

have() { podman image exists "$1" && [ "${STANDIN_REBUILD:-0}" != 1 ]; }

# The machine's Debian mirror, from the deb822 or one-line apt sources.
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local found
  found=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ && uri ~ /\/debian\/?$/ {print uri; exit}')
  [ -n "$found" ] || found=$(awk '$1 == "deb" && $3 == "bookworm" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null)
  echo "${found:-http://deb.debian.org/debian}"
}

# podman build of one recipe with the tags given; --network=host for apt-get.
build() {
  local file=$1 context=$2
  shift 2
  local tags=()
  for tag in "$@"; do tags+=(--tag "$tag"); done
  podman build --pull=never --network=host --file "$here/$file" "${tags[@]}" "${extra[@]}" "$context"
}

debian() {
  have "$base" && return
  local rootfs=$work/rootfs-bookworm url
  url=$(mirror)
  if [ ! -f "$rootfs/.debootstrap-done" ]; then
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase bookworm from $url"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$url" >"$work/debootstrap.log" 2>&1 ||
      { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap (log: $work/debootstrap.log)"; }
    touch "$rootfs/.debootstrap-done"
  fi
  # As in Debian's own container images: no daemons started by package
  # scripts, no recommends, no documentation, an empty apt cache.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/90standin"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/90standin"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  log "importing $base"
  tar -C "$rootfs" --exclude=./.debootstrap-done --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf - . |
    podman import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      --message 'mediavault TEST STAND-IN: debootstrap --variant=minbase bookworm' \
      - "$base" >/dev/null
}

rust() {
  have docker.io/library/rust:1.95-bookworm && return
  STANDIN_REBUILD=0 debian
  local toolchain=${RUST_TOOLCHAIN_DIR:-}
  if [ -z "$toolchain" ]; then
    for t in 1.95.0 stable; do
      toolchain=${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$t-x86_64-unknown-linux-gnu
      [ -d "$toolchain" ] && break
    done
  fi
  toolchain=$(readlink -f "$toolchain")
  [ -x "$toolchain/bin/cargo" ] || die "no Rust toolchain at $toolchain (set RUST_TOOLCHAIN_DIR)"
  "$toolchain/bin/rustc" --version | grep -q '^rustc 1\.95\.' ||
    die "$toolchain is $("$toolchain/bin/rustc" --version), not the 1.95 that deploy/Dockerfile names"
  log "rust:1.95-bookworm from $toolchain"
  local ca=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  [ -s "$ca" ] || die "no CA bundle at $ca (set HOST_CA_BUNDLE)"
  local extra=(--volume "$toolchain:/mnt/toolchain:ro" --volume "$(readlink -f "$ca"):/mnt/host-ca-certificates.crt:ro")
  build rust.Containerfile "$here" docker.io/library/rust:1.95-bookworm "$prefix/rust:1.95-bookworm"
}

distroless() {
  have gcr.io/distroless/cc-debian12:nonroot && return
  STANDIN_REBUILD=0 debian
  log "gcr.io/distroless/cc-debian12:nonroot"
  local extra=()
  build distroless-cc.Containerfile "$here" gcr.io/distroless/cc-debian12:nonroot "$prefix/distroless-cc:nonroot"
}

postgres() {
  have docker.io/library/postgres:16 && return
  STANDIN_REBUILD=0 debian
  log "postgres:16"
  local extra=()
  build postgres.Containerfile "$here" docker.io/library/postgres:16 "$prefix/postgres:16"
}

garage() {
  have docker.io/dxflrs/garage:v2.5.0 && return
  STANDIN_REBUILD=0 distroless
  local bin=${GARAGE_BIN:-$(type -P garage || echo "$HOME/.cargo/bin/garage")}
  [ -x "$bin" ] || die "no garage binary at $bin (scripts/test-services.sh builds one; or set GARAGE_BIN)"
  "$bin" --version | grep -q '2\.5\.0' || die "$bin is $("$bin" --version | head -n 1), not Garage v2.5.0"
  local context=$work/garage-context
  rm -rf "$context"
  mkdir -p "$context"
  cp "$bin" "$context/garage"
  log "dxflrs/garage:v2.5.0 from $bin"
  local extra=()
  build garage.Containerfile "$context" docker.io/dxflrs/garage:v2.5.0 "$prefix/garage:v2.5.0"
}

aws-cli() {
  have docker.io/amazon/aws-cli:2.27.0 && return
  STANDIN_REBUILD=0 debian
  log "amazon/aws-cli:2.27.0"
  local extra=()
  build aws-cli.Containerfile "$here" docker.io/amazon/aws-cli:2.27.0 "$prefix/aws-cli:2.27.0"
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, and the images go to root's podman storage)"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(debian rust distroless postgres garage aws-cli)
for t in "${targets[@]}"; do
  case $t in
    debian | rust | distroless | postgres | garage | aws-cli) "$t" ;;
    *) die "unknown stand-in $t" ;;
  esac
done
