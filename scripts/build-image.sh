#!/usr/bin/env bash
# Build labcloud/busybox:1, the image of the container demo app and of the container tests, and import it into
# Docker and/or Podman. No registry is needed: the image is a root file system made on this machine from
# Debian's static busybox (package busybox-static): /bin/busybox with a link per applet (/usr/bin is a link to
# /bin), /etc/passwd and /etc/group with root and nobody, and /tmp.
#
#   bash scripts/build-image.sh [docker|podman|all]
#       into the machine's Docker (the daemon DOCKER_HOST names, or docker's default) and/or Podman;
#       the default is every one of them that is available, and at least one must be.
#   bash scripts/build-image.sh docker|podman -- CLI [GLOBAL OPTIONS...]
#       into the engine this command reaches: a private daemon or storage (testing/engines.py), e.g.
#       bash scripts/build-image.sh podman -- podman --root /tmp/x/root --runroot /tmp/x/run
#   bash scripts/build-image.sh tar
#       only build the root file system's tar, and print its path.
#
# The tar is built once per busybox binary and kept in ${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images/
# (written under another name and renamed, so a reader never sees half of it). Its bytes depend only on
# busybox (sorted names, zero times, root owner), so the same busybox gives the same digest. The image is
# labelled with that digest (org.labcloud.rootfs): an engine whose labcloud/busybox:1 already carries it is
# left alone. Prints what it did and the image id in each engine; exits non-zero when it could not.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) stops the script too

TAG=labcloud/busybox:1
LABEL=org.labcloud.rootfs
RECIPE=1 # raise when the root file system's layout changes: the cached tars are then rebuilt
IMAGE_PATH=/usr/local/bin:/usr/bin:/bin

die() {
  echo "build-image: $*" >&2
  exit 1
}

usage() {
  echo "usage: bash scripts/build-image.sh [docker|podman|all]" >&2
  echo "       bash scripts/build-image.sh docker|podman -- CLI [GLOBAL OPTIONS...]" >&2
  echo "       bash scripts/build-image.sh tar" >&2
  exit 2
}

# The static busybox, or why there is none.
find_busybox() {
  local candidate
  for candidate in "${BUSYBOX:-}" /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    # ldd answers 0 only for a dynamically linked program, which the image could not run (it has no libc).
    if ldd "$candidate" >/dev/null 2>&1; then
      die "$candidate is linked dynamically; the image needs the static one: apt-get install busybox-static"
    fi
    echo "$candidate"
    return
  done
  die "no busybox found; install Debian's busybox-static (apt-get install busybox-static)"
}

# Build the tar unless it is cached; print its path.
build_tar() {
  local busybox version sum cache tar stage tmp name
  busybox=$(find_busybox)
  version=$("$busybox" --help 2>&1 | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')
  [ -n "$version" ] || die "$busybox does not say which BusyBox it is"
  sum=$(sha256sum "$busybox" | cut -c1-12)
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images
  tar=$cache/busybox-$version-$sum-r$RECIPE.tar
  if [ -s "$tar" ]; then
    echo "$tar"
    return
  fi
  mkdir -p "$cache"
  stage=$(mktemp -d "${TMPDIR:-/tmp}/labcloud-rootfs.XXXXXX")
  tmp=$(mktemp "$cache/.busybox.XXXXXX")
  trap 'rm -rf "$stage" "$tmp"' EXIT
  (
    umask 022
    mkdir -p "$stage/rootfs/bin" "$stage/rootfs/etc" "$stage/rootfs/tmp" "$stage/rootfs/usr"
    chmod 1777 "$stage/rootfs/tmp"
    cp "$busybox" "$stage/rootfs/bin/busybox"
    chmod 0755 "$stage/rootfs/bin/busybox"
    for name in $("$busybox" --list); do
      [ "$name" = busybox ] || ln -s busybox "$stage/rootfs/bin/$name"
    done
    ln -s ../bin "$stage/rootfs/usr/bin"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
      >"$stage/rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$stage/rootfs/etc/group"
  )
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$stage/rootfs" -cf "$tmp" .
  chmod 0644 "$tmp"
  mv -f "$tmp" "$tar"
  rm -rf "$stage"
  trap - EXIT
  echo "built $tar from $busybox (BusyBox $version)" >&2
  echo "$tar"
}

# Whether the machine's engine of this kind can take the image; on stdout, why not.
unavailable() {
  case $1 in
    docker)
      command -v docker >/dev/null 2>&1 || {
        echo "docker is not installed (Debian package docker.io)"
        return 0
      }
      if ! timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "no Docker daemon answers at ${DOCKER_HOST:-the default socket} (start one, or set DOCKER_HOST)"
        return 0
      fi
      ;;
    podman)
      command -v podman >/dev/null 2>&1 || {
        echo "podman is not installed (Debian package podman)"
        return 0
      }
      ;;
  esac
  return 1
}

# import_into KIND CLI...: import the tar as $TAG unless the engine already holds it.
import_into() {
  local kind=$1 tar digest have out id
  shift
  tar=$(build_tar)
  digest=sha256:$(sha256sum "$tar" | cut -d' ' -f1)
  have=$("$@" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
  if [ "$have" = "$digest" ]; then
    echo "$kind: $TAG is already there (root file system $digest)"
  else
    if ! out=$("$@" import --change "ENV PATH=$IMAGE_PATH" --change "LABEL $LABEL=$digest" "$tar" "$TAG" 2>&1); then
      die "$kind: importing $tar as $TAG failed: $out"
    fi
    echo "$kind: imported $TAG (root file system $digest)"
  fi
  id=$("$@" image inspect --format '{{.Id}}' "$TAG") || die "$kind: $TAG is not there after the import"
  echo "$kind: image id $id"
}

engine=${1:-}
case $engine in
  tar)
    [ $# -eq 1 ] || usage
    build_tar
    ;;
  docker | podman)
    if [ $# -gt 1 ]; then
      [ "$2" = -- ] && [ $# -gt 2 ] || usage
      shift 2
      import_into "$engine" "$@"
    else
      reason=$(unavailable "$engine") && die "cannot import into $engine: $reason"
      import_into "$engine" "$engine"
    fi
    ;;
  all | '')
    [ $# -le 1 ] || usage
    done_any=0
    for kind in docker podman; do
      if reason=$(unavailable "$kind"); then
        [ "$engine" = all ] && die "cannot import into $kind: $reason"
        echo "$kind: skipped, $reason"
      else
        import_into "$kind" "$kind"
        done_any=1
      fi
    done
    [ "$done_any" = 1 ] || die "neither Docker nor Podman is available (install docker.io or podman)"
    ;;
  *) usage ;;
esac
