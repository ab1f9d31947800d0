#!/usr/bin/env bash
# Install and start what tests/ops/test_ops_docker.py needs, on a fresh Debian machine (run as root
# by .ci/run): docker.io, debootstrap and docker-compose (v1) from Debian's packages, a running
# dockerd (no systemd here), and a minimal Debian base image made locally, since no container
# registry is reachable: `debootstrap --variant=minbase` + `docker import`.
#   bash .ci/docker_setup.sh            -> prints "docker ready: <base image>" or exits non-zero
# The rootfs tarball is cached in $MEGATRON_RETRO_DOCKER_CACHE (default /var/cache/megatron-retro-docker),
# so a second run imports it in seconds instead of bootstrapping again.
set -euo pipefail
BASE_IMAGE=${MEGATRON_RETRO_BASE_IMAGE:-local/debian:bookworm-minbase}
CACHE=${MEGATRON_RETRO_DOCKER_CACHE:-/var/cache/megatron-retro-docker}
SUITE=bookworm
# The apt mirror this machine already uses (deb822 sources, else sources.list), else Debian's.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian

log() { echo "docker_setup: $*" >&2; }

apt_install() {  # apt may be slow or its lists stale on a fresh machine: update and retry once
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "$@"; then
    log "apt-get install failed once; updating the lists and retrying"
    sleep 5
    apt-get update -o Acquire::Retries=3
    apt-get install -y --no-install-recommends -o Acquire::Retries=3 "$@"
  fi
}

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt_install "${need[@]}" iptables ca-certificates
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  # dockerd outlives this script: close every inherited descriptor above 2 first (a caller's lock
  # file, e.g. the flock of a job queue, would otherwise stay held by dockerd for good)
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null
  ) &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start:"; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  mkdir -p "$CACHE"
  tarball="$CACHE/debian-$SUITE-minbase.tar"
  if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d)
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "docker import $tarball -> $BASE_IMAGE"
  docker import "$tarball" "$BASE_IMAGE" >/dev/null
fi
echo "docker ready: $BASE_IMAGE"
