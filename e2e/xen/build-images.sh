#!/bin/sh
# Builds the xen tier's two initramfs images (see e2e/README.md, "xen tier").
#
# Usage: e2e/xen/build-images.sh <xen.env> <out-dir> <domU label>... [-- overlay-dir ...]
#
#   <xen.env>   written by e2e/fetch-xen.sh
#   <out-dir>   gets domu.cpio.gz and dom0.cpio.gz
#   labels      the domU kernels (e2e/work/kernels/<label>/kernel.env), copied
#               into dom0 as /xen/<label>/vmlinuz
#   overlay     copied over the domU's root (the staged balloonctl)
#
# domU: e2e/build-initramfs.sh's busybox root (guest tools: memlock, memhog)
# with e2e/xen/domu-init as /init and no modules: the cloud kernels build in
# the Xen balloon and the hvc0 console. One image serves both domU kernels.
#
# dom0: static busybox, e2e/xen/dom0-init as /init, the Xen modules that the
# generic kernel does not build in, the toolstack (xl, xenstored,
# xenconsoled, xen-init-dom0, xenstore-*) with the ldd closure of its
# binaries, the domU kernels and the domU image, and the overlays (balloonctl).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
e2e=$(cd "$here/.." && pwd)
work=${E2E_WORK:-$e2e/work}
log() { echo "xen/build-images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -ge 2 ] || die "usage: $0 <xen.env> <out-dir> <label>... [-- overlay-dir ...]"
# shellcheck disable=SC1090
. "$1"
out=$2
shift 2
labels=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do labels="$labels $1"; shift; done
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"

# 1. domU: the busybox tier's builder with another /init and no modules.
first=$(echo $labels | cut -d' ' -f1)
[ -n "$first" ] || die "no domU kernel label"
E2E_INITRAMFS_INIT=$here/domu-init E2E_INITRAMFS_MODULES=" " \
	"$e2e/build-initramfs.sh" "$work/kernels/$first/kernel.env" "$out/domu.cpio.gz" "$@"

# 2. dom0
[ -s "$DOM0_MODDIR/modules.dep" ] || {
	command -v depmod >/dev/null 2>&1 || PATH=$PATH:/sbin:/usr/sbin
	base=$(mktemp -d)
	mkdir -p "$base/lib/modules"
	ln -s "$DOM0_MODDIR" "$base/lib/modules/$DOM0_KVER"
	depmod -b "$base" "$DOM0_KVER"
	rm -rf "$base"
}
busybox=""
for b in /bin/busybox /usr/bin/busybox; do
	if [ -x "$b" ] && LC_ALL=C ldd "$b" 2>&1 | grep -q 'not a dynamic'; then busybox=$b; break; fi
done
[ -n "$busybox" ] || die "no static busybox (apt-get install busybox-static)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/e2e-dom0.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" "$stage/usr/local/bin" \
	"$stage/proc" "$stage/sys" "$stage/dev" "$stage/run" "$stage/tmp" "$stage/etc" "$stage/var/lib/xen" \
	"$stage/var/log/xen" "$stage/lib/modules" "$stage/root" "$stage/xen" "$stage/usr/lib/x86_64-linux-gnu"
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod /dev/console (not root?)"
cp "$busybox" "$stage/bin/busybox"
cp "$here/dom0-init" "$stage/init"
cp "$here/domu-exec" "$stage/usr/local/bin/domu-exec"
chmod 755 "$stage/init" "$stage/usr/local/bin/domu-exec"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

# Modules in dependency order (modules.dep lists dependencies first-needed last).
: >"$stage/lib/modules/load-order"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
	line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$DOM0_MODDIR/modules.dep" || true)
	[ -n "$line" ] || { log "$m: built in"; continue; }
	for p in $(echo "$line" | sed 's/^[^:]*: *//' | tr ' ' '\n' | tac) $(echo "$line" | cut -d: -f1); do
		n=$(basename "$p" | sed -E 's/\.ko(\.[a-z]+)?$//')
		grep -qx "$n" "$stage/lib/modules/load-order" && continue
		case "$p" in
		*.xz) xz -dc "$DOM0_MODDIR/$p" >"$stage/lib/modules/$n.ko" ;;
		*.zst) zstd -dcq "$DOM0_MODDIR/$p" >"$stage/lib/modules/$n.ko" ;;
		*) cp "$DOM0_MODDIR/$p" "$stage/lib/modules/$n.ko" ;;
		esac
		echo "$n" >>"$stage/lib/modules/load-order"
	done
done

# The toolstack at the paths the packages install it, then every library its
# binaries resolve (the package's own first, then this machine's).
mkdir -p "$stage/usr/lib/xen-4.17/bin" "$stage/etc/xen"
for b in xl xenstored xenconsoled xen-init-dom0 xenstore-control libxl-save-helper; do
	cp "$ROOT/usr/lib/xen-4.17/bin/$b" "$stage/usr/lib/xen-4.17/bin/"
	ln -sf "/usr/lib/xen-4.17/bin/$b" "$stage/usr/sbin/$b"
done
cp "$ROOT/usr/bin/xenstore" "$stage/usr/bin/"
for t in read write ls list exists rm watch chmod; do ln -sf xenstore "$stage/usr/bin/xenstore-$t"; done
cp -a "$ROOT/etc/xen/xl.conf" "$stage/etc/xen/"
cp -a "$ROOT/usr/lib/x86_64-linux-gnu/." "$stage/usr/lib/x86_64-linux-gnu/"
libpath=$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu
for b in "$stage"/usr/lib/xen-4.17/bin/* "$stage/usr/bin/xenstore"; do
	LD_LIBRARY_PATH=$libpath ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
	case "$lib" in
	"$ROOT"/*) dst=${lib#"$ROOT"} ;;
	*) dst=$lib ;;
	esac
	[ -e "$stage$dst" ] && continue
	mkdir -p "$stage$(dirname "$dst")"
	cp -L "$lib" "$stage$dst"
done
missing=$(for b in "$stage"/usr/lib/xen-4.17/bin/*; do LD_LIBRARY_PATH=$libpath ldd "$b" | grep 'not found' || true; done)
[ -z "$missing" ] || die "unresolved libraries: $missing"
# xl needs libgcc_s for pthread_cancel (dlopened, so ldd does not list it).
gcc_s=$(ls "$ROOT"/usr/lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1 2>/dev/null | head -n 1)
[ -n "$gcc_s" ] || die "no libgcc_s.so.1"
mkdir -p "$stage/lib/x86_64-linux-gnu"
cp -L "$gcc_s" "$stage/lib/x86_64-linux-gnu/libgcc_s.so.1"

# The domU kernels and image.
for l in $labels; do
	# shellcheck disable=SC1090
	. "$work/kernels/$l/kernel.env"
	mkdir -p "$stage/xen/$l"
	cp "$VMLINUZ" "$stage/xen/$l/vmlinuz"
	echo "$KVER" >"$stage/xen/$l/kver"
done
cp "$out/domu.cpio.gz" "$stage/xen/domu.cpio.gz"
# balloonctl in dom0 too: dom0 is a Xen guest with its own balloon.
for overlay in "$@"; do cp -a "$overlay/." "$stage/"; done
echo "$DOM0_KVER" >"$stage/etc/e2e-kernel"

(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$out/dom0.cpio.gz.tmp"
mv "$out/dom0.cpio.gz.tmp" "$out/dom0.cpio.gz"
log "$out/dom0.cpio.gz ($(du -k "$out/dom0.cpio.gz" | cut -f1) KiB; modules: $(tr '\n' ' ' <"$stage/lib/modules/load-order"); domU kernels:$labels)"
