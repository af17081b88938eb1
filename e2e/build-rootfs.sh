#!/bin/sh
# Builds the system tier's guest disks: a real Debian root filesystem (systemd
# as PID 1, systemd-udevd, journald) on an ext4 image, plus a tiny busybox
# stub initramfs that mounts it. Nothing is installed on this machine and
# nothing touches its /sys: mmdebstrap builds into a tarball, mkfs.ext4 -d
# writes the image from a directory (no loop device, no mount), and no
# maintainer script of the tested package runs here (the guest installs it).
#
# Usage:
#   e2e/build-rootfs.sh base <suite>
#       Debian <suite> (bookworm, trixie) as a tarball, built with mmdebstrap
#       from the machine's configured mirror and cached under
#       e2e/work/rootfs/, keyed by its package list and build options.
#       Prints the tarball's path.
#   e2e/build-rootfs.sh image <kernel.env> <suite> <out-dir>
#       <out-dir>/rootfs.ext4 (the base + the kernel's modules + the harness's
#       command channel and guest tools), <out-dir>/stub.cpio.gz, and
#       <out-dir>/image.env (KEY, SUITE, KVER, ROOTFS, INITRD). Rebuilt only
#       when one of its inputs changed.
#
# Every step is named; a failure prints "build-rootfs: FAILED at step '<step>'"
# and the tail of that step's log.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-$here/work}
cache=$work/rootfs
mkdir -p "$cache"
PATH=$PATH:/usr/sbin:/sbin

log() { echo "build-rootfs: $*" >&2; }
step=start
steplog=""
on_exit() {
	rc=$?
	if [ "$rc" != 0 ]; then
		log "FAILED at step '$step' (exit $rc)"
		if [ -n "$steplog" ] && [ -s "$steplog" ]; then
			log "last lines of $steplog:"
			tail -n 25 "$steplog" | sed 's/^/    /' >&2
		fi
	fi
	[ -z "${tmp:-}" ] || rm -rf "$tmp"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
tmp=""

# The packages of the guest. The .deb under test brings its own dependencies
# (dh_shlibdeps: libc6, libgcc-s1, libstdc++6, libudev1; kmod): they are here
# so that apt installs it offline in the guest.
# qemu-guest-agent: the host reads `balloonctl advise --json` through it
# (guest_agent, harness/system/qga.py); udev starts it when its port appears.
PACKAGES="systemd systemd-sysv udev kmod procps libstdc++6 libgcc-s1 libudev1 qemu-guest-agent"
# The guest's modules (with their dependencies): the balloon, the disks, the
# virtio transports, virtio_console for the guest agent's virtio-serial port.
MODULES="virtio_pci virtio_mmio virtio_balloon virtio_blk virtio_console"

mirror_uri() {
	uri=""
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) { print $i; exit } }' /etc/apt/sources.list)
	fi
	echo "${uri:-http://deb.debian.org/debian}"
}
security_uri() {
	sec=""
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sec=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	echo "${sec:-http://deb.debian.org/debian-security}"
}

# base <suite>: the cached mmdebstrap tarball.
base() {
	suite=$1
	case $suite in bookworm | trixie) ;; *) step="check suite"; log "unknown suite '$suite' (bookworm, trixie)"; exit 2 ;; esac
	step="sources for $suite"
	sources=$cache/sources-$suite.list
	k=/usr/share/keyrings/debian-archive-keyring.gpg
	{
		echo "deb [signed-by=$k] $(mirror_uri) $suite main"
		echo "deb [signed-by=$k] $(mirror_uri) $suite-updates main"
		echo "deb [signed-by=$k] $(security_uri) $suite-security main"
	} >"$sources"
	# Everything that shapes the tarball goes into its key.
	opts="--mode=root --variant=apt --hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr"
	key=$({ echo "$suite"; echo "$PACKAGES"; echo "$opts"; cat "$sources"; mmdebstrap --version; } |
		sha256sum | cut -c1-16)
	tar=$cache/base-$suite-$key.tar
	if [ -s "$tar" ]; then
		log "$suite: cached $tar"
		echo "$tar"
		return 0
	fi
	step="mmdebstrap $suite"
	steplog=$cache/base-$suite-$key.log
	log "$suite: mmdebstrap ($PACKAGES), log $steplog"
	t0=$(date +%s)
	# shellcheck disable=SC2086
	SOURCE_DATE_EPOCH=1700000000 mmdebstrap $opts \
		--include="$(echo "$PACKAGES" | tr ' ' ',')" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook='echo 5f1d2c3b4a5968778695a4b3c2d1e0f1 >"$1/etc/machine-id"' \
		"$suite" "$tar.tmp.tar" "$sources" >"$steplog" 2>&1
	mv "$tar.tmp.tar" "$tar"
	steplog=""
	log "$suite: built $tar ($(du -m "$tar" | cut -f1) MB) in $(($(date +%s) - t0)) s"
	echo "$tar"
}

# image <kernel.env> <suite> <out-dir>
image() {
	env_file=$1 suite=$2
	mkdir -p "$3"
	out=$(cd "$3" && pwd)
	step="read $env_file"
	# shellcheck disable=SC1090
	. "$env_file"
	[ -d "$MODDIR" ] || { log "no module directory $MODDIR"; exit 1; }
	step="base rootfs $suite"
	tar=$(base "$suite")
	step="guest tools"
	tools=$work/guest-tools
	mkdir -p "$tools"
	for src in "$here"/guest-tools/memlock.c "$here"/guest-tools/memhog.c; do
		name=$(basename "$src" .c)
		if [ ! -x "$tools/$name" ] || [ "$src" -nt "$tools/$name" ]; then
			gcc -O2 -static -Wall -Wextra -o "$tools/$name.tmp" "$src"
			mv "$tools/$name.tmp" "$tools/$name"
		fi
	done
	key=$({ basename "$tar"; echo "$PKG $PKG_VERSION $KVER $MODULES"; cat "$0" "$here"/system/* "$tools/memlock" "$tools/memhog" "$here/build-initramfs.sh"; } |
		sha256sum | cut -c1-16)
	if [ -f "$out/image.env" ] && grep -q "^KEY='$key'$" "$out/image.env" && [ -s "$out/rootfs.ext4" ]; then
		log "$LABEL: cached image $out ($key)"
		return 0
	fi
	t0=$(date +%s)

	# modules.dep: Debian's kernel packages ship none (depmod -b wants
	# <base>/lib/modules/<kver>: a temporary base with a symlink).
	step="depmod (host copy of $KVER)"
	if [ ! -s "$MODDIR/modules.dep" ]; then
		b=$(mktemp -d)
		mkdir -p "$b/lib/modules"
		ln -s "$MODDIR" "$b/lib/modules/$KVER"
		depmod -b "$b" "$KVER"
		rm -rf "$b"
	fi

	tmp=$(mktemp -d "${TMPDIR:-/tmp}/e2e-rootfs.XXXXXX")
	root=$tmp/root
	mkdir -p "$root"
	step="unpack $(basename "$tar")"
	tar -C "$root" --numeric-owner -xf "$tar"

	# Only the virtio modules and their dependencies: udev coldplug is the
	# slowest part of a boot under TCG, and with the whole tree it also loads
	# kvm, ata_piix, i2c, input... for QEMU's other devices.
	step="kernel modules $KVER"
	mkdir -p "$root/usr/lib/modules/$KVER"
	files=$(awk -v want="$MODULES" '
		function modname(p,   n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/-/, "_", n); return n }
		{ split($0, parts, ":"); name = modname(parts[1]); file[name] = parts[1]; deps[name] = parts[2] }
		function visit(name,   n, i, d) {
			if (name in seen) return
			seen[name] = 1
			if (!(name in file)) return
			print file[name]
			n = split(deps[name], d, " ")
			for (i = 1; i <= n; i++) visit(modname(d[i]))
		}
		END { n = split(want, w, " "); for (i = 1; i <= n; i++) visit(w[i]) }' "$MODDIR/modules.dep")
	(cd "$MODDIR" && tar -cf - $files modules.builtin modules.builtin.modinfo modules.order 2>/dev/null) |
		tar -C "$root/usr/lib/modules/$KVER" -xf -
	depmod -b "$root" "$KVER" 2>/dev/null || {
		# depmod -b wants <base>/lib/modules; merged /usr has lib -> usr/lib.
		[ -e "$root/lib/modules/$KVER" ] || { log "no lib/modules in the rootfs"; exit 1; }
		depmod -b "$root" "$KVER"
	}

	step="overlay (command channel, guest tools, boot settings)"
	install -m 0755 "$here/system/e2e-channel" "$root/usr/local/sbin/e2e-channel"
	install -m 0644 "$here/system/e2e-channel.service" "$root/etc/systemd/system/e2e-channel.service"
	mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
	ln -sf /etc/systemd/system/e2e-channel.service "$root/etc/systemd/system/sysinit.target.wants/e2e-channel.service"
	install -m 0755 "$tools/memlock" "$tools/memhog" "$root/usr/local/bin/"
	# No login is needed (the channel drives the guest); logind and the apt
	# timers only cost boot time and CPU under TCG.
	for u in getty.target systemd-logind.service apt-daily.timer apt-daily-upgrade.timer \
		man-db.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do
		ln -sf /dev/null "$root/etc/systemd/system/$u"
	done
	# The stub mounts / read-write; there is nothing else to mount.
	: >"$root/etc/fstab"
	echo e2e-guest >"$root/etc/hostname"
	mkdir -p "$root/root"
	echo "$KVER" >"$root/etc/e2e-kernel"

	step="mkfs.ext4"
	mkdir -p "$out"
	rm -f "$out/rootfs.ext4.tmp"
	truncate -s 2G "$out/rootfs.ext4.tmp"
	mkfs.ext4 -q -F -L e2e-root -d "$root" "$out/rootfs.ext4.tmp"
	mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"

	step="stub initramfs"
	E2E_INITRAMFS_INIT=$here/system/stub-init E2E_INITRAMFS_MODULES="virtio_pci virtio_blk ext4" \
		E2E_INITRAMFS_NO_TOOLS=1 "$here/build-initramfs.sh" "$env_file" "$out/stub.cpio.gz"

	step="image.env"
	cat >"$out/image.env" <<EOT
KEY='$key'
SUITE='$suite'
LABEL='$LABEL'
KVER='$KVER'
ROOTFS='$out/rootfs.ext4'
INITRD='$out/stub.cpio.gz'
EOT
	log "$LABEL: image $out ($suite, $KVER) in $(($(date +%s) - t0)) s"
}

cmd=${1:-}
case $cmd in
base) [ $# -eq 2 ] || { echo "usage: $0 base <suite>" >&2; exit 2; }; base "$2" ;;
image) [ $# -eq 4 ] || { echo "usage: $0 image <kernel.env> <suite> <out-dir>" >&2; exit 2; }; image "$2" "$3" "$4" ;;
*) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
