#!/bin/sh
# Fetches the Debian guest kernels the end-to-end tests boot under QEMU, and
# caches them under e2e/work/kernels. Nothing is installed on this machine:
# the packages are fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`, and apt runs against a PRIVATE state directory per source
# (its own package lists and cache), so the machine's apt state is untouched.
#
# Usage: e2e/fetch-kernels.sh [bookworm] [trixie] [backports]
#                                       (default: bookworm backports)
#
#   bookworm   Debian 12's current 6.1 cloud kernel (the package that
#              linux-image-cloud-amd64 depends on), from the sources the
#              machine already configures.
#   trixie     Debian 13's main 6.12 cloud kernel (what trixie's
#              linux-image-cloud-amd64 depends on, trixie + trixie-security),
#              using the Debian mirror URI the machine already configures.
#   backports  the newest linux-image-<v>-cloud-amd64 (>= 6.15) in
#              trixie-backports, using the Debian mirror URI the machine
#              already configures. Newer packages are split into
#              linux-image (a stub) + linux-binary + linux-modules (+ base):
#              all of them are fetched.
#
# Environment:
#   E2E_WORK                 work directory (default: e2e/work next to this script)
#   E2E_BOOKWORM_PKG         pin the bookworm package (e.g. linux-image-6.1.0-56-cloud-amd64)
#   E2E_TRIXIE_PKG           pin the trixie package (e.g. linux-image-6.12.48+deb13-cloud-amd64)
#   E2E_BACKPORTS_PKG        pin the backports package (e.g. linux-image-6.18.15+deb13-cloud-amd64)
#   E2E_KERNEL_MAX_AGE_MIN   reuse a cached kernel without asking apt if it was
#                            resolved less than this many minutes ago (default 720)
#   E2E_REFRESH_KERNELS=1    always re-resolve (apt-get update) even if cached
#
# For each kernel it writes e2e/work/kernels/<label>/kernel.env (shell syntax):
#   LABEL PKG PKG_VERSION KVER ROOT VMLINUZ MODDIR
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-$here/work}
kdir=$work/kernels
mkdir -p "$kdir"
max_age=${E2E_KERNEL_MAX_AGE_MIN:-720}

log() { echo "fetch-kernels: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

labels=${*:-bookworm backports}

# apt options for a private state directory $1 whose sources are set up by the
# caller ($1/etc/sources.list and, optionally, a parts directory).
apt_opts() {
	st=$1 parts=$2
	echo "-o Dir::Etc::SourceList=$st/etc/sources.list -o Dir::Etc::SourceParts=$parts" \
		"-o Dir::State::Lists=$st/lists -o Dir::Cache=$st/cache" \
		"-o Acquire::Retries=3 -q"
}

# The Debian mirror URI the machine configures (deb822 or classic list).
mirror_uri() {
	uri=""
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) { print $i; exit } }' /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "no Debian mirror URI configured in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
	echo "$uri"
}

# The security archive's URI the machine configures, else Debian's.
security_uri() {
	sec=""
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sec=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$sec" ] && [ -f /etc/apt/sources.list ]; then
		sec=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i ~ /security/) { print $i; exit } }' /etc/apt/sources.list)
	fi
	echo "${sec:-http://deb.debian.org/debian-security}"
}

# Makes the private state directory for one label and prints its apt options.
prepare_state() {
	label=$1
	st=$kdir/apt-$label
	mkdir -p "$st/etc" "$st/lists/partial" "$st/cache/archives/partial"
	case $label in
	bookworm)
		# The machine's own sources (deb822 parts and any classic list),
		# copied so that apt reads them from our private state.
		: >"$st/etc/sources.list"
		[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$st/etc/sources.list"
		rm -rf "$st/etc/sources.list.d"
		mkdir -p "$st/etc/sources.list.d"
		if [ -d /etc/apt/sources.list.d ]; then
			for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
				[ -f "$f" ] && cp "$f" "$st/etc/sources.list.d/"
			done
		fi
		apt_opts "$st" "$st/etc/sources.list.d"
		;;
	backports)
		uri=$(mirror_uri) || exit 1
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie-backports main" >"$st/etc/sources.list"
		apt_opts "$st" /dev/null
		;;
	trixie)
		uri=$(mirror_uri) || exit 1
		sec=$(security_uri)
		{
			echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main"
			echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $sec trixie-security main"
		} >"$st/etc/sources.list"
		apt_opts "$st" /dev/null
		;;
	*) die "unknown kernel label '$label' (bookworm, trixie, backports)" ;;
	esac
}

# Resolves the linux-image package name for a label; $1 = label, $2 = apt options.
resolve_pkg() {
	label=$1 o=$2
	case $label in
	bookworm)
		if [ -n "${E2E_BOOKWORM_PKG:-}" ]; then echo "$E2E_BOOKWORM_PKG"; return; fi
		# shellcheck disable=SC2086
		p=$(apt-cache $o depends linux-image-cloud-amd64 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9.-]+-cloud-amd64$/ {print $2; exit}')
		if [ -z "$p" ]; then
			# shellcheck disable=SC2086
			p=$(apt-cache $o search --names-only '^linux-image-6\.1\.[0-9.-]+-cloud-amd64$' |
				awk '{print $1}' | sort -V | tail -n 1)
		fi
		echo "$p"
		;;
	trixie)
		if [ -n "${E2E_TRIXIE_PKG:-}" ]; then echo "$E2E_TRIXIE_PKG"; return; fi
		# shellcheck disable=SC2086
		p=$(apt-cache $o depends linux-image-cloud-amd64 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.12\.[0-9]+[+]deb13[a-z0-9.+~-]*-cloud-amd64$/ {print $2; exit}')
		if [ -z "$p" ]; then
			# shellcheck disable=SC2086
			p=$(apt-cache $o search --names-only '^linux-image-6\.12\.[0-9]+[+]deb13.*-cloud-amd64$' |
				awk '{print $1}' | sort -V | tail -n 1)
		fi
		echo "$p"
		;;
	backports)
		if [ -n "${E2E_BACKPORTS_PKG:-}" ]; then echo "$E2E_BACKPORTS_PKG"; return; fi
		# shellcheck disable=SC2086
		apt-cache $o search --names-only '^linux-image-[0-9][0-9.]*[+][a-z0-9]*-cloud-amd64$' |
			awk '{print $1}' | sort -V | tail -n 1
		;;
	esac
}

fetch_one() {
	label=$1
	out=$kdir/$label
	env_file=$out/kernel.env
	if [ "${E2E_REFRESH_KERNELS:-0}" != 1 ] && [ -f "$env_file" ] &&
		[ -n "$(find "$env_file" -mmin "-$max_age" 2>/dev/null)" ]; then
		# shellcheck disable=SC1090
		. "$env_file"
		if [ -f "$VMLINUZ" ] && [ -d "$MODDIR" ]; then
			log "$label: cached $PKG ($KVER), resolved less than $max_age min ago"
			return 0
		fi
	fi

	o=$(prepare_state "$label")
	log "$label: apt-get update (private state $kdir/apt-$label)"
	# shellcheck disable=SC2086
	apt-get $o update >"$kdir/apt-$label.update.log" 2>&1 ||
		die "$label: apt-get update failed (see $kdir/apt-$label.update.log)"

	pkg=$(resolve_pkg "$label" "$o")
	[ -n "$pkg" ] || die "$label: could not resolve a cloud kernel package"
	# shellcheck disable=SC2086
	ver=$(apt-cache $o show "$pkg" 2>/dev/null | awk '/^Version:/{print $2; exit}')
	[ -n "$ver" ] || die "$label: package $pkg not found"
	kv=$(echo "$pkg" | sed -e 's/^linux-image-//' -e 's/-cloud-amd64$//')
	if [ "$label" = backports ]; then
		major=$(echo "$kv" | cut -d. -f1) minor=$(echo "$kv" | cut -d. -f2 | sed 's/[^0-9].*//')
		if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 15 ]; }; then
			die "$label: newest package $pkg is older than 6.15"
		fi
	fi

	if [ -f "$env_file" ]; then
		# shellcheck disable=SC1090
		. "$env_file"
		if [ "${PKG:-}" = "$pkg" ] && [ "${PKG_VERSION:-}" = "$ver" ] && [ -f "$VMLINUZ" ] && [ -d "$MODDIR" ]; then
			touch "$env_file"
			log "$label: $pkg $ver already unpacked"
			return 0
		fi
	fi

	# The image package plus, for split packages, its same-version parts
	# (linux-binary-*, linux-modules-*, linux-base-*).
	# shellcheck disable=SC2086
	parts=$(apt-cache $o depends "$pkg" 2>/dev/null |
		awk -v kv="$kv" '$1 == "Depends:" { n = $2; if (n ~ ("^linux-(binary|modules|base)-" ) && index(n, kv "-cloud-amd64")) print n }' |
		sort -u | tr '\n' ' ')
	dl=$kdir/debs-$label
	rm -rf "$dl"
	mkdir -p "$dl"
	log "$label: apt-get download $pkg $parts($ver)"
	# shellcheck disable=SC2086
	(cd "$dl" && apt-get $o download "$pkg" $parts) >"$kdir/apt-$label.download.log" 2>&1 ||
		die "$label: apt-get download failed (see $kdir/apt-$label.download.log)"

	rm -rf "$out.new"
	mkdir -p "$out.new/root"
	for deb in "$dl"/*.deb; do
		dpkg-deb -x "$deb" "$out.new/root"
	done
	root=$out/root
	kver="" moddir="" vmlinuz=""
	for m in "$out.new/root/lib/modules" "$out.new/root/usr/lib/modules"; do
		[ -d "$m" ] || continue
		for d in "$m"/*; do
			[ -d "$d/kernel" ] || continue
			kver=$(basename "$d")
			moddir=${d#"$out.new/root/"}
		done
	done
	[ -n "$kver" ] || die "$label: no modules directory in $pkg"
	for v in "boot/vmlinuz-$kver" "$moddir/vmlinuz" "usr/lib/modules/$kver/vmlinuz"; do
		if [ -f "$out.new/root/$v" ]; then vmlinuz=$v; break; fi
	done
	[ -n "$vmlinuz" ] || die "$label: no vmlinuz in $pkg"
	cat >"$out.new/kernel.env" <<EOF
LABEL='$label'
PKG='$pkg'
PKG_VERSION='$ver'
KVER='$kver'
ROOT='$root'
VMLINUZ='$root/$vmlinuz'
MODDIR='$root/$moddir'
EOF
	rm -rf "$out"
	mv "$out.new" "$out"
	rm -rf "$dl"
	log "$label: $pkg $ver -> $out (kernel $kver)"
}

for label in $labels; do
	fetch_one "$label"
done
