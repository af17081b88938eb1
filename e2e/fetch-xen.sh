#!/bin/sh
# Fetches what the xen tier boots under QEMU and caches it under e2e/work/xen:
# the Xen 4.17 hypervisor, its toolstack (xl, xenstored, xenconsoled and their
# libraries) and Debian 12's generic 6.1 kernel for dom0 (the cloud kernels
# have no CONFIG_XEN_DOM0). Nothing is installed on this machine: the packages
# are fetched with `apt-get download` into a PRIVATE apt state directory and
# unpacked with `dpkg-deb -x`, like fetch-kernels.sh does.
#
# Usage: e2e/fetch-xen.sh
#
# Environment:
#   E2E_WORK                 work directory (default: e2e/work next to this script)
#   E2E_XEN_DOM0_PKG         pin the dom0 kernel (e.g. linux-image-6.1.0-57-amd64)
#   E2E_KERNEL_MAX_AGE_MIN   reuse the cache without asking apt if it was resolved
#                            less than this many minutes ago (default 720)
#   E2E_REFRESH_KERNELS=1    always re-resolve
#
# Writes e2e/work/xen/xen.env (shell syntax):
#   XEN (the multiboot image QEMU's -kernel loads), XEN_VERSION, DOM0_PKG,
#   DOM0_KVER, DOM0_VMLINUZ, DOM0_MODDIR, ROOT (the unpacked packages)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-$here/work}
xdir=$work/xen
mkdir -p "$xdir"
max_age=${E2E_KERNEL_MAX_AGE_MIN:-720}
env_file=$xdir/xen.env

log() { echo "fetch-xen: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "${E2E_REFRESH_KERNELS:-0}" != 1 ] && [ -f "$env_file" ] &&
	[ -n "$(find "$env_file" -mmin "-$max_age" 2>/dev/null)" ]; then
	# shellcheck disable=SC1090
	. "$env_file"
	if [ -f "$XEN" ] && [ -f "$DOM0_VMLINUZ" ] && [ -x "$ROOT/usr/lib/xen-4.17/bin/xl" ]; then
		log "cached Xen $XEN_VERSION, dom0 $DOM0_PKG, resolved less than $max_age min ago"
		exit 0
	fi
fi

# A private apt state with the machine's own (bookworm) sources.
# shellcheck source=e2e/apt-private.sh
. "$here/apt-private.sh"
log "apt-get update (private state $xdir/apt)"
apt_private_setup "$xdir/apt" "$xdir/apt.update.log" || die "apt-get update failed (see $xdir/apt.update.log)"

dom0=${E2E_XEN_DOM0_PKG:-}
if [ -z "$dom0" ]; then
	# shellcheck disable=SC2086
	dom0=$(apt-cache $o depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9.-]+-amd64$/ {print $2; exit}')
fi
[ -n "$dom0" ] || die "could not resolve the generic 6.1 kernel (linux-image-amd64's dependency)"

# The hypervisor, the toolstack and every library xl, xenstored and
# xenconsoled link (ldd closure checked below), plus libgcc_s (xl's threads).
pkgs="xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils libxenmisc4.17
 libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1
 libxenstore4 libxentoollog1 libxentoolcore1
 libyajl2 libext2fs2 libgcc-s1 $dom0"
dl=$xdir/debs
rm -rf "$dl"
mkdir -p "$dl"
log "apt-get download $(echo $pkgs | tr '\n' ' ')"
# shellcheck disable=SC2086
(cd "$dl" && apt-get $o download $pkgs) >"$xdir/apt.download.log" 2>&1 ||
	die "apt-get download failed (see $xdir/apt.download.log)"

rm -rf "$xdir/root.new"
mkdir -p "$xdir/root.new"
for deb in "$dl"/*.deb; do
	dpkg-deb -x "$deb" "$xdir/root.new"
done
r=$xdir/root.new
gz=$(ls "$r"/boot/xen-4.17*-amd64.gz 2>/dev/null | head -n 1)
[ -n "$gz" ] || die "no boot/xen-4.17*-amd64.gz in xen-hypervisor-4.17-amd64"
# QEMU's -kernel loads the decompressed ELF32 multiboot image as is.
zcat "$gz" >"$xdir/xen.new"
kver=${dom0#linux-image-}
[ -f "$r/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $dom0"
[ -x "$r/usr/lib/xen-4.17/bin/xl" ] || die "no usr/lib/xen-4.17/bin/xl in xen-utils-4.17"
xver=$(dpkg-deb -f "$(ls "$dl"/xen-hypervisor-4.17-amd64_*.deb)" Version)
dver=$(dpkg-deb -f "$(ls "$dl"/"${dom0}"_*.deb)" Version)
rm -rf "$xdir/root"
mv "$r" "$xdir/root"
mv "$xdir/xen.new" "$xdir/xen"
cat >"$env_file" <<EOF
XEN='$xdir/xen'
XEN_VERSION='$xver'
DOM0_PKG='$dom0'
DOM0_PKG_VERSION='$dver'
DOM0_KVER='$kver'
DOM0_VMLINUZ='$xdir/root/boot/vmlinuz-$kver'
DOM0_MODDIR='$xdir/root/lib/modules/$kver'
ROOT='$xdir/root'
EOF
rm -rf "$dl"
log "Xen $xver, dom0 $dom0 $dver -> $xdir ($(du -sm "$xdir/root" | cut -f1) MiB unpacked)"
