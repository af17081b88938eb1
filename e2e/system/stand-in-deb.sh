#!/bin/sh
# STAND-IN for `make deb` (issue 7 §1), to be replaced by its output: builds a
# throwaway balloonctl_<version>_amd64.deb from `make install DESTDIR=...
# PREFIX=/usr` with dpkg-deb, so that the system tier exercises the user's
# path (apt-get install of a .deb; the unit in /usr/lib/systemd/system, the
# rule in /usr/lib/udev/rules.d, /etc/default/balloonctl as a conffile) until
# the real package lands. e2e/run uses it only when no --deb/E2E_DEB is given.
# Its maintainer scripts do the minimum the real ones must (reload udev and
# systemd, re-trigger a present balloon; on removal stop the service and give
# back a balloon left unbound); they are no model for debian/.
#
# Usage: e2e/system/stand-in-deb.sh <balloonctl binary> <out.deb>
set -eu
bin=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/e2e-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
root=$stage/root
make -s -C "$repo" -o build -o deps install DESTDIR="$root" PREFIX=/usr RELEASE_BIN="$(realpath "$bin")" >/dev/null
strip --strip-unneeded "$root/usr/sbin/balloonctl"
version=$("$root/usr/sbin/balloonctl" --version 2>/dev/null | awk '{print $NF; exit}' | tr -c 'A-Za-z0-9.+~\n-' '+')
case $version in [0-9]*) ;; *) version=0.0.0+$version ;; esac
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOT
Package: balloonctl
Version: $version
Architecture: amd64
Maintainer: balloonctl e2e stand-in <e2e@invalid>
Depends: libc6, libgcc-s1, libstdc++6, libudev1, kmod
Section: admin
Priority: optional
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Description: hypervisor memory balloon guard (e2e STAND-IN package)
 Throwaway package built by e2e/system/stand-in-deb.sh until make deb exists.
EOT
echo /etc/default/balloonctl >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	udevadm control --reload || true
	udevadm trigger --action=add --subsystem-match=virtio --attr-match=device=0x0005 || true
fi
EOT
cat >"$root/DEBIAN/prerm" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop balloonctl.service || true
	# No balloon stays held by a guard that is gone.
	for d in /sys/bus/virtio/devices/*; do
		[ "$(cat "$d/device" 2>/dev/null)" = 0x0005 ] || continue
		[ -e "$d/driver" ] && continue
		echo "$(basename "$d")" >/sys/bus/virtio/drivers/virtio_balloon/bind || true
	done
fi
EOT
cat >"$root/DEBIAN/postrm" <<'EOT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	udevadm control --reload || true
fi
if [ "$1" = purge ]; then
	rm -rf /run/balloonctl
fi
EOT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
