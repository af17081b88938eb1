#!/bin/sh
# Builds the test initramfs for one guest kernel.
#
# Usage: e2e/build-initramfs.sh <kernel.env> <out.cpio.gz> [overlay-dir ...]
#
#   <kernel.env>   written by fetch-kernels.sh (KVER, MODDIR, ...)
#   <out.cpio.gz>  the initramfs to write
#   overlay-dir    directories copied over the root last (e.g. the staged
#                  balloonctl binary with its shared libraries)
#
# The root holds: static busybox, e2e/init as /init, the guest tools
# (e2e/guest-tools/*.c built with gcc -static into /usr/local/bin), and the
# modules virtio_pci, virtio_balloon and virtio_blk (for optional swap) with
# their dependencies, decompressed (busybox insmod needs plain .ko) and listed
# in /lib/modules/load-order in dependency order. If the kernel package ships
# no modules.dep, `depmod -b` creates it once in the cached kernel tree.
#
# The system tier's stub (build-rootfs.sh) uses the same builder with
# E2E_INITRAMFS_INIT (its /init), E2E_INITRAMFS_MODULES (the module list) and
# E2E_INITRAMFS_NO_TOOLS=1 (no guest tools: they live on the root disk).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-$here/work}
log() { echo "build-initramfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -ge 2 ] || die "usage: $0 <kernel.env> <out.cpio.gz> [overlay-dir ...]"
env_file=$1 out=$2
shift 2
# shellcheck disable=SC1090
. "$env_file"
[ -d "$MODDIR" ] || die "no module directory $MODDIR"

busybox=""
for b in /bin/busybox /usr/bin/busybox; do
	if [ -x "$b" ] && LC_ALL=C ldd "$b" 2>&1 | grep -q 'not a dynamic'; then
		busybox=$b
		break
	fi
done
[ -n "$busybox" ] || die "no static busybox (apt-get install busybox-static)"

init=${E2E_INITRAMFS_INIT:-$here/init}
no_tools=${E2E_INITRAMFS_NO_TOOLS:-0}
# Guest tools: rebuilt when a source is newer than its binary.
tools=$work/guest-tools
mkdir -p "$tools"
[ "$no_tools" = 1 ] || for src in "$here"/guest-tools/*.c; do
	name=$(basename "$src" .c)
	if [ ! -x "$tools/$name" ] || [ "$src" -nt "$tools/$name" ]; then
		gcc -O2 -static -Wall -Wextra -o "$tools/$name.tmp" "$src"
		mv "$tools/$name.tmp" "$tools/$name"
	fi
done

# modules.dep: Debian's 6.1 packages ship none, trixie ones neither. depmod
# -b wants <base>/lib/modules/<kver>, so a usr/lib/modules layout goes
# through a temporary base holding a symlink.
if [ ! -s "$MODDIR/modules.dep" ]; then
	command -v depmod >/dev/null 2>&1 || PATH=$PATH:/sbin:/usr/sbin
	command -v depmod >/dev/null 2>&1 || die "depmod not found (apt-get install kmod)"
	base=$(mktemp -d)
	mkdir -p "$base/lib/modules"
	ln -s "$MODDIR" "$base/lib/modules/$KVER"
	log "depmod -b for $KVER"
	depmod -b "$base" "$KVER"
	rm -rf "$base"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/e2e-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" "$stage/usr/local/bin" \
	"$stage/proc" "$stage/sys" "$stage/dev" "$stage/run" "$stage/tmp" "$stage/etc" \
	"$stage/lib/modules" "$stage/root" "$stage/var"
# The kernel opens /dev/console for init before /init mounts devtmpfs.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod /dev/console (not root?)"
cp "$busybox" "$stage/bin/busybox"
cp "$init" "$stage/init"
chmod 755 "$stage/init"
[ "$no_tools" = 1 ] || cp "$tools"/* "$stage/usr/local/bin/"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

# Dependency resolution from modules.dep ("path: dep1 dep2 ..."), dependencies
# listed most-dependent first, so they are loaded in reverse. Names found in
# modules.builtin, or nowhere, count as built in.
want=${E2E_INITRAMFS_MODULES:-virtio_pci virtio_balloon virtio_blk}
order=$(awk -v want="$want" '
	function modname(p,   n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/-/, "_", n); return n }
	FNR == NR {
		split($0, parts, ":")
		path = parts[1]; name = modname(path)
		file[name] = path
		deps[name] = parts[2]
		next
	}
	function visit(name,   n, i, d) {
		if (name in seen) return
		seen[name] = 1
		if (!(name in file)) { builtin[name] = 1; return }
		n = split(deps[name], d, " ")
		for (i = n; i >= 1; i--) visit(modname(d[i]))
		print name " " file[name]
	}
	END {
		n = split(want, w, " ")
		for (i = 1; i <= n; i++) visit(w[i])
	}' "$MODDIR/modules.dep")

: >"$stage/lib/modules/load-order"
echo "$order" | while read -r name path; do
	[ -n "$name" ] || continue
	src=$MODDIR/$path
	dst=$stage/lib/modules/$name.ko
	case "$src" in
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -dcq "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*.ko) cp "$src" "$dst" ;;
	*) die "unknown module file $src" ;;
	esac
	echo "$name" >>"$stage/lib/modules/load-order"
done
echo "$KVER" >"$stage/etc/e2e-kernel"

for overlay in "$@"; do
	[ -d "$overlay" ] || die "overlay $overlay is not a directory"
	cp -a "$overlay/." "$stage/"
done

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
log "$out ($(du -k "$out" | cut -f1) KiB; modules: $(tr '\n' ' ' <"$stage/lib/modules/load-order"))"
