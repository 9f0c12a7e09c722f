#!/usr/bin/env bash
# Build the root file system of labcloud/snakemake:<version>, the image the Snakemake-over-TES test runs its
# tasks in, as a tar (no registry is needed, nor reachable): Debian bookworm (minbase, with python3) made by
# debootstrap from Debian's packages (the root file system of scripts/build-base-image.sh, shared with the
# deployment kit's image and built once), and a venv /opt/snakemake holding Snakemake and its S3 storage plugin,
# installed from wheels downloaded on this machine. The wheels of the storage plugin stay in /opt/wheels and
# pip in the image installs from there only (/etc/pip.conf: no index): a Snakemake job installs the plugin
# into its working folder before it runs, and the container has no way to PyPI.
#
#   bash scripts/build-snakemake-image.sh SNAKEMAKE_VERSION S3_PLUGIN_VERSION
#
# Prints the tar's path. It is built once per pair of versions and kept in
# ${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images/ (written under another name and renamed). Needs root,
# debootstrap and python3 with pip; takes a few minutes the first time.
set -euo pipefail
shopt -s inherit_errexit

[ $# -eq 2 ] || {
  echo "usage: bash scripts/build-snakemake-image.sh SNAKEMAKE_VERSION S3_PLUGIN_VERSION" >&2
  exit 2
}
snakemake=$1 plugin=$2
RECIPE=2 # 2: from the shared base root file system
cache=${XDG_CACHE_HOME:-$HOME/.cache}/labcloud/images
tar=$cache/snakemake-$snakemake-s3-$plugin-r$RECIPE.tar
if [ -s "$tar" ]; then
  echo "$tar"
  exit 0
fi
base=$(bash "$(dirname "$0")/build-base-image.sh" tar)
mkdir -p "$cache"
stage=$(mktemp -d "${TMPDIR:-/tmp}/labcloud-snakemake.XXXXXX")
tmp=$(mktemp "$cache/.snakemake.XXXXXX")
trap 'umount "$stage/rootfs/proc" 2>/dev/null || true; rm -rf "$stage" "$tmp"' EXIT
root=$stage/rootfs

mkdir "$root"
tar --numeric-owner -C "$root" -xf "$base"

# The wheels, made here (this machine reaches PyPI; the image never does) by a Python 3.11 like the image's.
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "build-snakemake-image: python3 here must be 3.11, as in the image" >&2
  exit 1
}
python3 -m pip wheel -q -w "$stage/wheels" "snakemake==$snakemake" "snakemake-storage-plugin-s3==$plugin"
python3 -m pip wheel -q -w "$stage/plugin-wheels" "snakemake-storage-plugin-s3==$plugin"

mkdir -p "$root/opt/wheels"
cp "$stage"/plugin-wheels/*.whl "$root/opt/wheels/"
cp -r "$stage/wheels" "$root/opt/all-wheels"
chroot "$root" python3 -m venv /opt/snakemake
chroot "$root" /opt/snakemake/bin/pip install -q --no-index --find-links /opt/all-wheels \
  "snakemake==$snakemake" "snakemake-storage-plugin-s3==$plugin"
rm -rf "$root/opt/all-wheels" "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
printf '[global]\nno-index = true\nfind-links = /opt/wheels\ndisable-pip-version-check = true\n' >"$root/etc/pip.conf"

tar --sort=name --numeric-owner -C "$root" -cf "$tmp" .
mv "$tmp" "$tar"
echo "$tar"
