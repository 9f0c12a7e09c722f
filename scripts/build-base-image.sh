#!/usr/bin/env bash
# Build labcloud/debian-python:12, a Debian 12 (bookworm) base image with Python 3.11 made on this machine (no
# registry is needed, nor reachable): a minbase root file system made by debootstrap from Debian's packages, with
# python3, python3-venv, ca-certificates and bubblewrap (the jobs' sandbox). deploy/Dockerfile builds labcloud's
# image FROM it (`--build-arg BASE=labcloud/debian-python:12`); scripts/build-snakemake-image.sh starts from the
# same root file system, so the machine keeps one of them (some 40 s and 260 MB).
#
#   bash scripts/build-base-image.sh tar
#       only build the root file system's tar, and print its path.
#   bash scripts/build-base-image.sh docker|podman [-- CLI [GLOBAL OPTIONS...]]
#       import it into the machine's engine, or into the one this command reaches (a private daemon, as in
#       testing/engines.py), unless that engine already holds this tar's image.
#
# The tar is built once and kept in ${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images/ (written under another name
# and renamed, so a reader never sees half of it). The image is labelled with the tar's digest
# (org.labcloud.rootfs). Needs root and debootstrap.
set -euo pipefail
shopt -s inherit_errexit

TAG=labcloud/debian-python:12
LABEL=org.labcloud.rootfs
RECIPE=1 # raise when the package list changes: the cached tar is then rebuilt
PACKAGES=python3,python3-venv,ca-certificates,bubblewrap
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
  echo "build-base-image: $*" >&2
  exit 1
}

# Unmount whatever is mounted under a root file system (deepest first).
unmount_all() {
  local mount
  for mount in $(awk -v root="$1" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$mount" 2>/dev/null || umount -l "$mount"
  done
}

build_tar() {
  local cache tar stage tmp
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images
  tar=$cache/debian-python-bookworm-r$RECIPE.tar
  if [ -s "$tar" ]; then
    echo "$tar"
    return
  fi
  command -v debootstrap >/dev/null || die "install debootstrap (apt-get install debootstrap)"
  mkdir -p "$cache"
  stage=$(mktemp -d "${TMPDIR:-/tmp}/labcloud-base.XXXXXX")
  tmp=$(mktemp "$cache/.debian-python.XXXXXX")
  trap 'unmount_all "$stage/rootfs"; rm -rf "$stage" "$tmp"' EXIT
  debootstrap --variant=minbase --include=$PACKAGES bookworm "$stage/rootfs" http://deb.debian.org/debian \
    >"$stage/debootstrap.log" 2>&1 || {
    tail -20 "$stage/debootstrap.log" >&2
    die "debootstrap failed"
  }
  unmount_all "$stage/rootfs" # debootstrap may leave its /proc mounted: never into the tar
  rm -rf "$stage/rootfs/var/cache/apt/archives/"*.deb "$stage/rootfs/var/lib/apt/lists/"*
  tar --sort=name --numeric-owner -C "$stage/rootfs" -cf "$tmp" .
  chmod 0644 "$tmp"
  mv -f "$tmp" "$tar"
  rm -rf "$stage"
  trap - EXIT
  echo "built $tar" >&2
  echo "$tar"
}

import_into() {
  local kind=$1 tar digest have out
  shift
  tar=$(build_tar)
  digest=sha256:$(sha256sum "$tar" | cut -d' ' -f1)
  have=$("$@" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
  if [ "$have" = "$digest" ]; then
    echo "$kind: $TAG is already there (root file system $digest)"
    return
  fi
  out=$("$@" import --change "ENV PATH=$IMAGE_PATH" --change "ENV LANG=C.UTF-8" \
    --change "LABEL $LABEL=$digest" "$tar" "$TAG" 2>&1) || die "$kind: importing $tar as $TAG failed: $out"
  echo "$kind: imported $TAG (root file system $digest)"
}

case ${1:-} in
  tar)
    [ $# -eq 1 ] || die "usage: build-base-image.sh tar | docker|podman [-- CLI OPTIONS...]"
    build_tar
    ;;
  docker | podman)
    kind=$1
    shift
    if [ $# -gt 0 ]; then
      [ "$1" = -- ] && [ $# -gt 1 ] || die "usage: build-base-image.sh docker|podman -- CLI [OPTIONS...]"
      shift
      import_into "$kind" "$@"
    else
      import_into "$kind" "$kind"
    fi
    ;;
  *) die "usage: build-base-image.sh tar | docker|podman [-- CLI OPTIONS...]" ;;
esac
