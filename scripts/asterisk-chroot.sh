#!/usr/bin/env bash
# Builds (idempotently) the Debian sid chroot that holds a real Asterisk 22
# for the res_anytun tests. Debian 12 has no asterisk package; sid does.
#
#   scripts/asterisk-chroot.sh          build when missing or broken, print its path
#   scripts/asterisk-chroot.sh --force  rebuild from scratch
#
# The chroot lives outside the repository (about 700 MB):
#   ANYTUN_ASTERISK_CHROOT (default /var/cache/anytun/asterisk-sid)
# A stamp file, $ROOT/.anytun-stamp, holds the Asterisk version; the chroot is
# rebuilt when the stamp is missing or `asterisk -V` no longer runs in it.
# Needs root. proc/sys/dev are mounted only while apt installs packages
# (maintainer scripts need them) and unmounted afterwards, even on failure.
set -euo pipefail

ROOT=${ANYTUN_ASTERISK_CHROOT:-/var/cache/anytun/asterisk-sid}
STAMP=$ROOT/.anytun-stamp
# What the tests need inside: Asterisk and its headers, a compiler for the
# module, sox for audio, SIPp (sip-tester) as the SIP phones of test 3, BIRD 2
# (bird2) for the proxy PBX that announces its own anycast route (test 2).
PACKAGES="asterisk asterisk-dev asterisk-modules gcc libc6-dev make sox sip-tester bird2"

die() { echo "asterisk-chroot: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot); run as root"

healthy() {
    [ -s "$STAMP" ] && chroot "$ROOT" /usr/sbin/asterisk -V >/dev/null 2>&1 &&
        [ -f "$ROOT/usr/include/asterisk.h" ]
}

mounted=()
cleanup() {
    local m
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        m=${mounted[i]}
        umount -l "$m" 2>/dev/null || true
    done
}
trap cleanup EXIT

# apt-get install in chroot $1 with proc/sys/dev mounted for the
# maintainer scripts, unmounted afterwards.
install_in() {
    local dir=$1 fs
    shift
    for fs in proc sys dev; do
        mount --bind "/$fs" "$dir/$fs"
        mounted+=("$dir/$fs")
    done
    chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
        die "apt-get install $* in the chroot failed"
    chroot "$dir" apt-get clean
    cleanup
    mounted=()
}

if [ "${1:-}" != --force ] && healthy; then
    # A package added to PACKAGES since the chroot was built.
    missing=
    for p in $PACKAGES; do
        chroot "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' ||
            missing="$missing $p"
    done
    if [ -n "${missing// /}" ]; then
        echo "asterisk-chroot: adding $missing to $ROOT" >&2
        # shellcheck disable=SC2086
        install_in "$ROOT" $missing
    fi
    echo "$ROOT"
    exit 0
fi

# The host's own Debian mirror (deb822 or one-line sources).
mirror() {
    local u
    u=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$u" ] || u=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    echo "${u:-http://deb.debian.org/debian}"
}

if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

MIRROR=$(mirror)
echo "asterisk-chroot: building $ROOT from $MIRROR (sid)" >&2
rm -rf --one-file-system "$ROOT"
mkdir -p "$(dirname "$ROOT")"
tmp=$ROOT.tmp
rm -rf --one-file-system "$tmp"
debootstrap --variant=minbase sid "$tmp" "$MIRROR" >&2 || die "debootstrap failed (see above)"

# No daemon starts from postinst; sid's Release file looks expired against
# this machine's clock.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' >"$tmp/etc/apt/apt.conf.d/99anytun"
cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true

# shellcheck disable=SC2086
install_in "$tmp" $PACKAGES

version=$(chroot "$tmp" /usr/sbin/asterisk -V) || die "asterisk -V fails in the new chroot"
mv "$tmp" "$ROOT"
echo "$version" >"$STAMP"
healthy || die "the new chroot at $ROOT is not usable"
echo "asterisk-chroot: $version ready in $ROOT" >&2
echo "$ROOT"
