#!/bin/sh
# Fetches earlyoom, the anchor of the events scenario's idle comparison, and
# caches it under e2e/work/earlyoom: Debian's package for this machine's
# release (the same earlyoom make bench runs), unpacked, never installed (an
# installed earlyoom would start its service on this machine).
#
# Usage: e2e/fetch-earlyoom.sh
#
# Environment:
#   E2E_WORK   work directory (default: e2e/work next to this script)
#
# Leaves e2e/work/earlyoom/root/usr/bin/earlyoom.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-$here/work}
edir=$work/earlyoom
log() { echo "fetch-earlyoom: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -x "$edir/root/usr/bin/earlyoom" ]; then
	log "cached $(cat "$edir/version" 2>/dev/null)"
	exit 0
fi
mkdir -p "$edir"
# shellcheck source=e2e/apt-private.sh
. "$here/apt-private.sh"
apt_private_setup "$edir/apt" "$edir/apt.update.log" || die "apt-get update failed (see $edir/apt.update.log)"
dl=$edir/debs
rm -rf "$dl" "$edir/root.new"
mkdir -p "$dl" "$edir/root.new"
# shellcheck disable=SC2086
(cd "$dl" && apt-get $o download earlyoom) >"$edir/apt.download.log" 2>&1 ||
	die "apt-get download earlyoom failed (see $edir/apt.download.log)"
deb=$(ls "$dl"/earlyoom_*.deb)
dpkg-deb -x "$deb" "$edir/root.new"
[ -x "$edir/root.new/usr/bin/earlyoom" ] || die "no usr/bin/earlyoom in $deb"
dpkg-deb -f "$deb" Version >"$edir/version"
rm -rf "$edir/root" "$dl"
mv "$edir/root.new" "$edir/root"
log "earlyoom $(cat "$edir/version") -> $edir/root/usr/bin/earlyoom"
