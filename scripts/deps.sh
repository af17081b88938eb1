#!/bin/sh
# Installs the Debian packages a make target needs, and nothing else.
# Usage: scripts/deps.sh build|test|e2e|bench|deb ...
#
# libudev-dev is pinned to the installed libudev1: an unpinned install pulls a
# newer libudev1 and with it systemd, libsystemd0 and friends (an upgrade of
# PID 1's packages as a side effect of building a tool).
set -eu

want=""
for group in "$@"; do
	case "$group" in
	build) want="$want pkg-config libudev-dev" ;;
	test) want="$want pkg-config libudev-dev umockdev libumockdev-dev" ;;
	e2e) want="$want pkg-config libudev-dev qemu-system-x86 busybox-static cpio kmod xz-utils gcc libc6-dev python3-venv mmdebstrap e2fsprogs dpkg-dev debian-archive-keyring" ;;
	bench) want="$want pkg-config libudev-dev earlyoom gcc libc6-dev valgrind" ;;
	# dpkg-buildpackage and the checks of its output. The Swift toolchain is
	# not a Debian package (debian/README.source).
	deb) want="$want pkg-config libudev-dev debhelper dpkg-dev lintian" ;;
	*) echo "deps.sh: unknown group '$group' (build, test, e2e, bench, deb)" >&2; exit 2 ;;
	esac
done

missing=""
for pkg in $want; do
	case " $missing " in *" $pkg "*) continue ;; esac
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing="$missing $pkg"
done
# systemd-analyze validates the unit file in the install test (make test and
# make deb run it).
case " $* " in *" test "* | *" deb "*) command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd" ;; esac
[ -n "$missing" ] || exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "deps.sh: need root (or sudo) to install:$missing" >&2; exit 1; }
	sudo=sudo
fi

pinned=""
for pkg in $missing; do
	if [ "$pkg" = libudev-dev ]; then
		v=$(dpkg-query -W -f='${Version}' libudev1)
		pkg="libudev-dev=$v"
	fi
	pinned="$pinned $pkg"
done

echo "deps.sh: installing$pinned" >&2
apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q"
$apt update >/dev/null
# shellcheck disable=SC2086
$apt install -y --no-install-recommends $pinned >/dev/null
