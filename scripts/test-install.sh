#!/usr/bin/env bash
# Proves `make install` and `make uninstall` into temporary DESTDIRs, for
# PREFIX=/usr/local (the default), /usr and /opt/balloonctl: every installed
# path and mode, the substituted unit, an admin's settings surviving a second
# install and the uninstall, the unit accepted by `systemd-analyze verify`, the
# udev rule's syntax, and the example settings parsed by the installed binary.
# Nothing is written outside the temporary directory, nothing is started, and
# no binary runs against the live system (only against a fixture tree).
#
# Also: `make install` needs no toolchain and no apt (it only copies a built
# binary, and refuses without one), and, given a .deb, the package: its
# files, modes, conffile, dependencies, maintainer scripts, man pages and
# completions (inspected with dpkg-deb, never installed).
#
# Usage: scripts/test-install.sh
#   BALLOONCTL_BIN=<binary>  install this binary instead of building the
#                            release one first (e.g. .build/debug/balloonctl)
#   BALLOONCTL_DEB=<.deb>    also check this package (`make deb` passes it);
#                            its binary is the one installed, unless
#                            BALLOONCTL_BIN says otherwise
#   KEEP=1                   keep the temporary directory
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/balloonctl-test-install.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "test-install: kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok    $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL  $*"; }
check() { # check "description" command...
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
die() {
	echo "test-install: FAIL: $*" >&2
	echo "test-install: $passed passed, $((failed + 1)) failed"
	exit 1
}
section() { echo; echo "== $*"; }

fixture=$repo/Tests/Fixtures/roots/virtio-6.18
[ -d "$fixture/proc" ] || die "fixture tree $fixture is missing"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found (apt-get install systemd)"

# --- the binary ---------------------------------------------------------------
section "binary"
deb=""
if [ -n "${BALLOONCTL_DEB:-}" ]; then
	[ -f "$BALLOONCTL_DEB" ] || die "BALLOONCTL_DEB=$BALLOONCTL_DEB is not a file"
	deb=$(cd "$(dirname "$BALLOONCTL_DEB")" && pwd)/$(basename "$BALLOONCTL_DEB")
	pkgroot=$tmp/deb-root
	pkgcontrol=$tmp/deb-control
	dpkg-deb -x "$deb" "$pkgroot" || die "dpkg-deb -x $deb failed"
	dpkg-deb -e "$deb" "$pkgcontrol" || die "dpkg-deb -e $deb failed"
fi
if [ -n "${BALLOONCTL_BIN:-}" ]; then
	bin=$(cd "$(dirname "$BALLOONCTL_BIN")" && pwd)/$(basename "$BALLOONCTL_BIN")
	[ -x "$bin" ] || die "BALLOONCTL_BIN=$BALLOONCTL_BIN is not an executable file"
	echo "using $bin (BALLOONCTL_BIN)"
elif [ -n "$deb" ]; then
	bin=$pkgroot/usr/sbin/balloonctl
	[ -x "$bin" ] || die "$deb has no executable /usr/sbin/balloonctl"
	echo "using $bin (from $deb)"
else
	make build || die "make build failed"
	bin=$repo/.build/release/balloonctl
	[ -x "$bin" ] || die "make build did not produce $bin"
fi
# What make install must put in place: the binary, stripped as `install -s`
# strips it (strip, no options).
stripped=$tmp/balloonctl.stripped
strip -o "$stripped" "$bin" || die "strip $bin failed"
# -o build: the binary is already built; every install below only copies.
install_cmd=(make --no-print-directory -o build install "RELEASE_BIN=$bin")
uninstall_cmd=(make --no-print-directory uninstall)

# --- helpers --------------------------------------------------------------------
mode_of() { stat -c %a "$1"; }

# The files (not directories) below a DESTDIR, relative, sorted.
files_below() { (cd "$1" && find . -type f -o -type l | sed 's|^\./|/|' | LC_ALL=C sort); }

# A root for `systemd-analyze verify --root`: the DESTDIR plus the host's
# targets and slices, which DefaultDependencies= pulls in. With --root, verify
# also checks that ExecStart= exists and is executable inside that root.
verify_unit() { # verify_unit DESTDIR
	local destdir=$1 vroot=$tmp/verify-root hostunits
	rm -rf "$vroot"
	cp -a "$destdir" "$vroot"
	mkdir -p "$vroot/usr/lib/systemd/system"
	for hostunits in /usr/lib/systemd/system /lib/systemd/system; do
		[ -e "$hostunits/sysinit.target" ] && break
	done
	cp -a "$hostunits"/*.target "$hostunits"/*.slice "$vroot/usr/lib/systemd/system/" 2>/dev/null || true
	[ -e "$vroot/usr/lib/systemd/system/sysinit.target" ] || {
		echo "    no sysinit.target in $hostunits"
		return 1
	}
	# ExecStartPre=+/bin/sh (the PCI config link, udev/balloonctl.service):
	# the system's shell, which the package depends on, not one it installs.
	mkdir -p "$vroot/bin"
	cp -L /bin/sh "$vroot/bin/sh"
	local out=$tmp/verify.out rc=0
	systemd-analyze verify --man=no --root="$vroot" balloonctl.service >"$out" 2>&1 || rc=$?
	if [ "$rc" != 0 ] || [ -s "$out" ]; then
		# Unknown keys and unparsable values are only warnings (exit 0): any
		# output at all is a failure.
		sed 's/^/    /' "$out"
		return 1
	fi
	# What systemd actually parsed (a misspelt capability is dropped without a
	# word): the debug dump of the loaded unit.
	SYSTEMD_LOG_LEVEL=debug systemd-analyze verify --man=no --root="$vroot" balloonctl.service \
		>"$tmp/verify.dump" 2>&1 || true
	local want missing=0
	while IFS= read -r want; do
		grep -qxF "		$want" "$tmp/verify.dump" || {
			echo "    parsed unit lacks: $want"
			missing=1
		}
	done <<-'EOF'
		Type: simple
		Restart: on-failure
		RestartSec: 2s
		TimeoutStopSec: 10s
		KillSignal: SIGTERM
		OOMPolicy: continue
		OOMScoreAdjust: -900
		CapabilityBoundingSet: cap_ipc_lock cap_sys_module cap_sys_admin cap_sys_resource cap_syslog
		ProtectSystem: strict
		ProtectHome: yes
		PrivateTmp: yes
		ProtectKernelTunables: yes
		ProtectKernelModules: no
		PrivateNetwork: no
		PrivateUsers: no
		ProtectProc: default
		ProcSubset: all
		RuntimeDirectory: balloonctl
		RuntimeDirectoryPreserve: yes
		ReadWritePaths: -/sys/bus/virtio/drivers -/sys/devices/system/xen_memory/xen_memory0/target_kb -/run/balloonctl.virtio-config
		SystemCallErrorNumber: EPERM
	EOF
	return $missing
}

# udev rules: every line is blank, a comment, or a rule of KEY[{attr}] OP
# "value" pairs separated by commas, with a key and operator udev accepts
# (systemd 252 udev-rules.c). Backslash-newline continues a line. Catches what
# udev would log and skip: unknown keys, a match operator on an assignment-only
# key or the reverse, a missing {attr}, an unterminated value, a missing comma.
check_rules() { # check_rules FILE...
	awk '
	function err(msg) { printf "    %s:%d: %s\n", FILENAME, start, msg; bad++; broken = 1 }
	function skipws() { while (pos <= n && substr(l, pos, 1) ~ /[ \t]/) pos++ }
	BEGIN {
		# key -> m (match only), a (assign only), b (both)
		split("ACTION DEVPATH KERNEL SUBSYSTEM DRIVER KERNELS SUBSYSTEMS DRIVERS ATTRS TAGS TEST RESULT CONST", mk, " ")
		for (i in mk) kind[mk[i]] = "m"
		split("OWNER GROUP MODE SECLABEL RUN OPTIONS GOTO LABEL", ak, " ")
		for (i in ak) kind[ak[i]] = "a"
		split("NAME SYMLINK ENV TAG ATTR SYSCTL PROGRAM IMPORT", bk, " ")
		for (i in bk) kind[bk[i]] = "b"
		split("ATTR ATTRS ENV SYSCTL SECLABEL CONST IMPORT", needattr, " ")
		for (i in needattr) attrkey[needattr[i]] = 1
		split("TEST RUN", optattr, " ")
		for (i in optattr) attrok[optattr[i]] = 1
	}
	FNR == 1 { cont = ""; }
	{
		if (cont == "") start = FNR
		line = $0
		if (line ~ /\\$/) { cont = cont substr(line, 1, length(line) - 1); next }
		l = cont line; cont = ""
		sub(/^[ \t]+/, "", l); sub(/[ \t\r]+$/, "", l)
		if (l == "" || substr(l, 1, 1) == "#") next
		rules++; broken = 0; n = length(l); pos = 1; pairs = 0
		while (pos <= n && !broken) {
			skipws()
			if (!match(substr(l, pos), /^[A-Z_]+/)) { err("expected a key at \"" substr(l, pos, 20) "\""); break }
			key = substr(l, pos, RLENGTH); pos += RLENGTH; attr = ""; hasattr = 0
			if (substr(l, pos, 1) == "{") {
				close_at = index(substr(l, pos), "}")
				if (!close_at) { err(key ": unterminated {"); break }
				attr = substr(l, pos + 1, close_at - 2); pos += close_at; hasattr = 1
			}
			if (!(key in kind)) { err("unknown key " key); break }
			if ((key in attrkey) && (!hasattr || attr == "")) { err(key " needs {attribute}"); break }
			if (hasattr && !(key in attrkey) && !(key in attrok)) { err(key " takes no {attribute}"); break }
			skipws()
			op = substr(l, pos, 2)
			if (op == "==" || op == "!=" || op == "+=" || op == "-=" || op == ":=") pos += 2
			else if (substr(l, pos, 1) == "=") { op = "="; pos++ }
			else { err(key ": expected an operator"); break }
			ismatch = (op == "==" || op == "!=")
			if (ismatch && kind[key] == "a") { err(key " cannot be matched (" op ")"); break }
			if (!ismatch && kind[key] == "m") { err(key " cannot be assigned (" op ")"); break }
			if (op == "-=" && key != "SYMLINK" && key != "TAG" && key != "ENV" && key != "RUN") { err(key " does not take -="); break }
			skipws()
			if (substr(l, pos, 1) == "e" && substr(l, pos + 1, 1) == "\"") pos++
			if (substr(l, pos, 1) != "\"") { err(key ": value must be in double quotes"); break }
			pos++; closed = 0
			while (pos <= n) {
				c = substr(l, pos, 1)
				if (c == "\\") { pos += 2; continue }
				pos++
				if (c == "\"") { closed = 1; break }
			}
			if (!closed) { err(key ": unterminated value"); break }
			pairs++
			skipws()
			if (pos > n) break
			if (substr(l, pos, 1) != ",") { err("expected \",\" after " key "=..."); break }
			pos++
		}
		if (!broken && pairs == 0) err("empty rule")
	}
	END { if (cont != "") { start = FNR; err("file ends in a backslash continuation") } exit bad ? 1 : 0 }
	' "$@"
}

# --- the udev rule ------------------------------------------------------------
section "udev rule: syntax"
rules=udev/60-balloonctl.rules
check "$rules parses as udev rules" check_rules "$rules"

# The checker itself: it must accept real-world rules (the host's, when it has
# any) and reject each broken one.
corpus=()
for dir in /usr/lib/udev/rules.d /lib/udev/rules.d; do
	for f in "$dir"/*.rules; do [ -f "$f" ] && corpus+=("$f"); done
	[ "${#corpus[@]}" = 0 ] || break
done
if [ "${#corpus[@]}" -gt 0 ]; then
	check "checker accepts the host's ${#corpus[@]} rule files" check_rules "${corpus[@]}"
else
	echo "  (no host udev rules to check the checker against)"
fi
n=0
while IFS= read -r broken; do
	n=$((n + 1))
	printf '%s\n' "$broken" >"$tmp/broken-$n.rules"
	if check_rules "$tmp/broken-$n.rules" >/dev/null; then bad "checker rejects: $broken"; else ok "checker rejects: $broken"; fi
done <<-'EOF'
	ACTION=="add", SUBSYSTEM=="virtio", TAG+="systemd
	ACTION=="add" SUBSYSTEM=="virtio", TAG+="systemd"
	ACTION="add", TAG+="systemd"
	ACTION=="add", RUN=="/bin/true"
	ACTION=="add", ENV="x"
	ACTION=="add", SUBSYTEM=="virtio"
	ACTION=="add", TAG=~"systemd"
	ACTION=="add", KERNEL{x}=="vmw_balloon"
	ACTION=="add", TAG+=systemd
EOF

section "udev rule: what it matches"
# Each rule must start the service through systemd, except the one that links
# the balloon's PCI config file for the unit's write hole.
link='RUN+="/bin/ln -sfn /sys%p/../config /run/balloonctl.virtio-config"'
while IFS= read -r rule; do
	case $rule in
	*'TAG+="systemd"'*'ENV{SYSTEMD_WANTS}+="balloonctl.service"'*) ok "starts balloonctl.service: ${rule%%, TAG+=*}" ;;
	*"$link") ok "links the PCI config hole: ${rule%%, RUN+=*}" ;;
	*) bad "rule does not add balloonctl.service to SYSTEMD_WANTS with TAG+=\"systemd\": $rule" ;;
	esac
done < <(grep -v '^[[:space:]]*\(#\|$\)' "$rules")
check "the PCI config link is the unit's hole" grep -q '^ReadWritePaths=-/run/balloonctl.virtio-config$' udev/balloonctl.service
check "the PCI config link is made only for virtio-pci balloons" \
	grep -q 'SUBSYSTEM=="virtio", ENV{MODALIAS}=="virtio:d00000005v\*", SUBSYSTEMS=="pci", RUN+=' "$rules"
for subsystem in virtio module xen_memory vmbus; do
	check "a rule matches SUBSYSTEM==\"$subsystem\"" grep -q "SUBSYSTEM==\"$subsystem\"" "$rules"
done
# The virtio MODALIAS pattern, taken from the rule, against real modaliases
# (udev matches with fnmatch, as the shell's case does).
glob=$(sed -n 's/.*ENV{MODALIAS}=="\([^"]*\)".*/\1/p' "$rules" | sort -u)
modalias_matches() { case $1 in $glob) return 0 ;; *) return 1 ;; esac; }
check "virtio MODALIAS pattern found ($glob)" test -n "$glob"
check "matches virtio-pci balloon virtio:d00000005v00001AF4" modalias_matches virtio:d00000005v00001AF4
check "matches virtio-mmio balloon virtio:d00000005v554D4551" modalias_matches virtio:d00000005v554D4551
check "ignores virtio_blk virtio:d00000002v00001AF4" eval '! modalias_matches virtio:d00000002v00001AF4'
check "ignores virtio id 0x15 virtio:d00000015v00001AF4" eval '! modalias_matches virtio:d00000015v00001AF4'
check "vmw_balloon matched by its module uevent" grep -q 'ACTION=="add", SUBSYSTEM=="module", KERNEL=="vmw_balloon"' "$rules"
check "Hyper-V balloon class GUID is lower-case, in braces (sysfs class_id)" \
	grep -q 'ATTR{class_id}=="{525074dc-8985-46e2-8057-a307dc18a502}"' "$rules"

# --- the example settings -------------------------------------------------------
section "example settings (udev/balloonctl.default)"
example=udev/balloonctl.default
keys=$(sed -n 's/.*key: "\(BALLOONCTL_[A-Z_]*\)".*/\1/p' Sources/BalloonKit/Config/RunSetting.swift)
[ -n "$keys" ] || die "no BALLOONCTL_ keys found in RunSetting.swift"
for key in $keys; do
	count=$(grep -c "^#\{0,1\}$key=" "$example" || true)
	check "$key documented once (found $count)" test "$count" = 1
done
active=$(grep '^[[:space:]]*BALLOONCTL_' "$example" || true)
check "the only active line is BALLOONCTL_MODE=enforce (got: $(echo $active))" test "$active" = "BALLOONCTL_MODE=enforce"

# --- install: PREFIX=/usr/local -----------------------------------------------
# expect_layout DESTDIR BINDIR UNITDIR UDEVDIR DATADIR
expect_layout() {
	local d=$1 bindir=$2 unitdir=$3 udevdir=$4 datadir=$5
	local want
	want=$(printf '%s\n' "$bindir/balloonctl" "$unitdir/balloonctl.service" "$udevdir/60-balloonctl.rules" /etc/default/balloonctl \
		"$datadir/balloonctl-alerts.yml" "$datadir/balloonctl-alerts.test.yml" | LC_ALL=C sort)
	check "installs exactly: $(echo $want)" test "$(files_below "$d")" = "$want"
	check "alert rules and their tests in $datadir are mode 0644 and the source" \
		eval "[ \"\$(mode_of '$d$datadir/balloonctl-alerts.yml')\" = 644 ] && cmp -s monitoring/balloonctl-alerts.yml '$d$datadir/balloonctl-alerts.yml' && cmp -s monitoring/balloonctl-alerts.test.yml '$d$datadir/balloonctl-alerts.test.yml'"
	check "binary $bindir/balloonctl is mode 0755 and the built one, stripped" \
		eval "[ \"\$(mode_of '$d$bindir/balloonctl')\" = 755 ] && cmp -s '$stripped' '$d$bindir/balloonctl'"
	check "binary $bindir/balloonctl has no .debug_ or .symtab sections" \
		eval "! readelf -S --wide '$d$bindir/balloonctl' | grep -qE '\.debug_|\.symtab'"
	check "rule $udevdir/60-balloonctl.rules is mode 0644 and the source" \
		eval "[ \"\$(mode_of '$d$udevdir/60-balloonctl.rules')\" = 644 ] && cmp -s udev/60-balloonctl.rules '$d$udevdir/60-balloonctl.rules'"
	check "unit $unitdir/balloonctl.service is mode 0644" test "$(mode_of "$d$unitdir/balloonctl.service")" = 644
	local execstart
	execstart=$(grep '^ExecStart=' "$d$unitdir/balloonctl.service")
	check "ExecStart=$bindir/balloonctl run --config /etc/default/balloonctl (got: $execstart)" \
		test "$execstart" = "ExecStart=$bindir/balloonctl run --config /etc/default/balloonctl"
	check "no @PLACEHOLDER@ left in the unit" eval "! grep -n '@[A-Z]*@' '$d$unitdir/balloonctl.service'"
	check "unit is the source with only the two placeholders replaced" \
		eval "sed -e 's|@BINDIR@|$bindir|g' -e 's|@SYSCONFDIR@|/etc|g' udev/balloonctl.service | cmp -s - '$d$unitdir/balloonctl.service'"
	check "settings /etc/default/balloonctl are mode 0644" test "$(mode_of "$d/etc/default/balloonctl")" = 644
	check "systemd-analyze verify accepts the installed unit (ExecStart checked inside DESTDIR)" verify_unit "$d"
}

expect_uninstalled() { # expect_uninstalled DESTDIR SETTINGS_COPY OUTPUT
	local d=$1 saved=$2 out=$3
	check "only the settings file is left" test "$(files_below "$d")" = /etc/default/balloonctl
	check "the settings are unchanged" cmp -s "$saved" "$d/etc/default/balloonctl"
	check "uninstall says it kept the settings" grep -q 'kept .*/etc/default/balloonctl' "$out"
}

section "make install (PREFIX=/usr/local, the default)"
d1=$tmp/usr-local
"${install_cmd[@]}" DESTDIR="$d1" 2>&1 | tee "$tmp/install1.out" || die "make install failed"
expect_layout "$d1" /usr/local/sbin /usr/local/lib/systemd/system /etc/udev/rules.d /usr/local/share/balloonctl
check "settings file is the example" cmp -s "$example" "$d1/etc/default/balloonctl"

section "installed binary parses the installed settings (report mode, fixture tree)"
installed=$d1/usr/local/sbin/balloonctl
settings=$d1/etc/default/balloonctl
run_out=$tmp/run.out
rc=0
"$installed" run --config "$settings" --once --mode report --root "$fixture" >"$run_out" 2>&1 || rc=$?
check "balloonctl run --config <installed> --once --mode report --root virtio-6.18 exits 0 (got $rc)" test "$rc" = 0
check "...and decides (prints a Decision line)" grep -q '^Decision ' "$run_out"
rc=0
"$installed" run --config "$settings" --once --root "$fixture" >"$run_out" 2>&1 || rc=$?
check "without --mode the settings select enforce: refused on a snapshot with 64 (got $rc)" \
	eval "[ $rc = 64 ] && grep -q 'enforce mode acts on the live system' '$run_out'"
# Every documented default, uncommented, must be a valid value. Flags win: the
# probe cannot run on a snapshot. A --root run writes no metrics file (the
# setting is still checked).
sed 's/^#\(BALLOONCTL_[A-Z_]*=\)/\1/' "$settings" >"$tmp/all-keys.default"
rc=0
"$installed" run --config "$tmp/all-keys.default" --once --mode report --no-probe-target \
	--root "$fixture" >"$run_out" 2>&1 || rc=$?
check "every documented default, uncommented, is accepted (got $rc)" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/    /' "$run_out"

section "second make install keeps an edited settings file"
printf 'BALLOONCTL_LOG_LEVEL=info\n' >>"$settings"
cp "$settings" "$tmp/settings.saved"
"${install_cmd[@]}" DESTDIR="$d1" >"$tmp/install2.out" 2>&1 || die "second make install failed: $(cat "$tmp/install2.out")"
check "the edited settings file is untouched" cmp -s "$tmp/settings.saved" "$settings"
check "install says it kept it" grep -q 'kept the existing .*/etc/default/balloonctl' "$tmp/install2.out"
expect_layout "$d1" /usr/local/sbin /usr/local/lib/systemd/system /etc/udev/rules.d /usr/local/share/balloonctl

section "make uninstall (PREFIX=/usr/local)"
"${uninstall_cmd[@]}" DESTDIR="$d1" 2>&1 | tee "$tmp/uninstall1.out" || die "make uninstall failed"
expect_uninstalled "$d1" "$tmp/settings.saved" "$tmp/uninstall1.out"

# --- PREFIX=/usr, and a PREFIX systemd and udev do not search ------------------
for layout in "/usr /usr/sbin /usr/lib/systemd/system /usr/lib/udev/rules.d" \
	"/opt/balloonctl /opt/balloonctl/sbin /etc/systemd/system /etc/udev/rules.d"; do
	read -r prefix bindir unitdir udevdir <<<"$layout"
	section "make install PREFIX=$prefix"
	d=$tmp/prefix${prefix//\//-}
	"${install_cmd[@]}" DESTDIR="$d" PREFIX="$prefix" >"$tmp/install.out" 2>&1 ||
		die "make install PREFIX=$prefix failed: $(cat "$tmp/install.out")"
	expect_layout "$d" "$bindir" "$unitdir" "$udevdir" "$prefix/share/balloonctl"
	cp "$d/etc/default/balloonctl" "$tmp/settings.saved"
	"${uninstall_cmd[@]}" DESTDIR="$d" PREFIX="$prefix" >"$tmp/uninstall.out" 2>&1 ||
		die "make uninstall PREFIX=$prefix failed: $(cat "$tmp/uninstall.out")"
	expect_uninstalled "$d" "$tmp/settings.saved" "$tmp/uninstall.out"
done

# --- make install copies; it never builds ---------------------------------------
section "make install needs a built binary, no toolchain and no apt"
# Stand-ins that record any call: make install must run none of them.
shims=$tmp/shims
mkdir -p "$shims"
for tool in swift swiftc apt apt-get sudo dpkg-query; do
	printf '#!/bin/sh\necho "%s $*" >>"%s"\nexit 1\n' "$tool" "$tmp/shims.log" >"$shims/$tool"
	chmod +x "$shims/$tool"
done
d=$tmp/no-toolchain
rc=0
PATH=$shims:$PATH "${install_cmd[@]}" DESTDIR="$d" >"$tmp/install-nt.out" 2>&1 || rc=$?
check "make install with a built binary exits 0 (got $rc)" test "$rc" = 0
check "...and ran no swift, apt, sudo or dpkg-query ($(cat "$tmp/shims.log" 2>/dev/null | head -1))" test ! -e "$tmp/shims.log"
check "...and its recipe names neither scripts/deps.sh nor a build" \
	eval "! make --no-print-directory -n install RELEASE_BIN='$bin' DESTDIR='$d' | grep -E 'deps\.sh|swift|apt-get'"
expect_layout "$d" /usr/local/sbin /usr/local/lib/systemd/system /etc/udev/rules.d /usr/local/share/balloonctl
d=$tmp/no-binary
rc=0
PATH=$shims:$PATH make --no-print-directory install RELEASE_BIN="$tmp/not-built/balloonctl" DESTDIR="$d" \
	>"$tmp/install-nb.out" 2>&1 || rc=$?
check "make install without a built binary fails (got $rc)" test "$rc" != 0
check "...saying to run make build" grep -q "make build" "$tmp/install-nb.out"
check "...having installed nothing" test ! -e "$d"
check "...and built nothing ($(cat "$tmp/shims.log" 2>/dev/null | head -1))" test ! -e "$tmp/shims.log"

# --- the Debian package -----------------------------------------------------------
if [ -n "$deb" ]; then
	section "package $(basename "$deb"): files"
	field() { dpkg-deb -f "$deb" "$1"; }
	version=$(field Version)
	upstream=${version%-*}
	commands=$("$bin" --help | sed -n '/^SUBCOMMANDS:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\).*/\1/p')
	check "balloonctl --help lists subcommands ($(echo $commands))" test -n "$commands"
	want=$({
		printf '%s\n' /etc/default/balloonctl /usr/lib/systemd/system/balloonctl.service \
			/usr/lib/udev/rules.d/60-balloonctl.rules /usr/sbin/balloonctl \
			/usr/share/bash-completion/completions/balloonctl \
			/usr/share/fish/vendor_completions.d/balloonctl.fish \
			/usr/share/zsh/vendor-completions/_balloonctl \
			/usr/share/doc/balloonctl/README.Debian /usr/share/doc/balloonctl/changelog.Debian.gz \
			/usr/share/doc/balloonctl/copyright /usr/share/man/man8/balloonctl.8.gz \
			/usr/share/balloonctl/balloonctl-alerts.yml /usr/share/balloonctl/balloonctl-alerts.test.yml
		for c in $commands; do echo "/usr/share/man/man8/balloonctl-$c.8.gz"; done
	} | LC_ALL=C sort)
	got=$(files_below "$pkgroot")
	check "ships exactly the expected files" test "$got" = "$want"
	[ "$got" = "$want" ] || diff <(echo "$want") <(echo "$got") | sed 's/^/    /' || true
	check "nothing below /run, /var or /usr/local" eval "! ls -d '$pkgroot'/run '$pkgroot'/var '$pkgroot'/usr/local 2>/dev/null | grep -q ."
	check "binary is mode 0755" test "$(mode_of "$pkgroot/usr/sbin/balloonctl")" = 755
	check "binary is stripped (no .debug_ or .symtab sections)" \
		eval "! readelf -S --wide '$pkgroot/usr/sbin/balloonctl' | grep -qE '\.debug_|\.symtab'"
	check "binary links no Swift runtime library (--static-swift-stdlib)" \
		eval "! readelf -d '$pkgroot/usr/sbin/balloonctl' | grep -qE 'libswift|libFoundation|libdispatch'"
	check "binary has no RUNPATH/RPATH" eval "! readelf -d '$pkgroot/usr/sbin/balloonctl' | grep -qE 'RUNPATH|RPATH'"
	check "balloonctl --version is the package's upstream version $upstream (got $("$bin" --version))" \
		test "$("$pkgroot/usr/sbin/balloonctl" --version)" = "$upstream"
	check "unit is the source with /usr/sbin and /etc (as make install PREFIX=/usr)" \
		eval "sed -e 's|@BINDIR@|/usr/sbin|g' -e 's|@SYSCONFDIR@|/etc|g' udev/balloonctl.service | cmp -s - '$pkgroot/usr/lib/systemd/system/balloonctl.service'"
	check "udev rule is the source" cmp -s udev/60-balloonctl.rules "$pkgroot/usr/lib/udev/rules.d/60-balloonctl.rules"
	check "settings are the example" cmp -s "$example" "$pkgroot/etc/default/balloonctl"
	check "systemd-analyze verify accepts the packaged unit" verify_unit "$pkgroot"
	check "copyright is machine-readable (DEP-5), Apache-2.0" \
		eval "head -1 '$pkgroot/usr/share/doc/balloonctl/copyright' | grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' && grep -q '^License: Apache-2.0' '$pkgroot/usr/share/doc/balloonctl/copyright'"

	section "package: man pages and completions"
	for page in balloonctl $(for c in $commands; do echo "balloonctl-$c"; done); do
		check "$page.8 is a section 8 page titled $page" \
			eval "zcat '$pkgroot/usr/share/man/man8/$page.8.gz' | grep -qE '^\.(Dt|TH) \"?${page^^}\"? \"?8\"?'"
		check "$page.8 has a NAME whatis can index" \
			eval "lexgrog '$pkgroot/usr/share/man/man8/$page.8.gz' | grep -q '\"$page - '"
	done
	check "balloonctl.8 documents --version" eval "zcat '$pkgroot/usr/share/man/man8/balloonctl.8.gz' | grep -q 'version'"
	check "man renders every page without a warning" \
		eval "for f in '$pkgroot'/usr/share/man/man8/*.8.gz; do LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l \"\$f\" 2>&1 >/dev/null | grep . && exit 1; done; true"
	for shell_file in bash-completion/completions/balloonctl zsh/vendor-completions/_balloonctl fish/vendor_completions.d/balloonctl.fish; do
		for c in $commands; do
			check "$shell_file completes $c" grep -q "$c" "$pkgroot/usr/share/$shell_file"
		done
	done
	check "bash completion parses (bash -n)" bash -n "$pkgroot/usr/share/bash-completion/completions/balloonctl"

	section "package: control"
	check "Package balloonctl, Architecture amd64" test "$(field Package) $(field Architecture)" = "balloonctl amd64"
	depends=$(field Depends)
	for dep in kmod libudev1 libc6; do
		check "Depends names $dep ($depends)" eval "echo '$depends' | grep -qE '(^|, )$dep( |,|$)'"
	done
	check "conffiles: exactly /etc/default/balloonctl" test "$(cat "$pkgcontrol/conffiles")" = /etc/default/balloonctl
	for script in postinst prerm postrm; do
		check "$script exists and parses (sh -n)" sh -n "$pkgcontrol/$script"
	done
	# Enabling again what the admin had enabled (was-enabled) is fine.
	check "postinst does not enable or start the unit" \
		awk '/^[[:space:]]*#/ { next }
			/systemctl .*(enable|start)|deb-systemd-invoke (start|restart)/ { bad = 1 }
			/deb-systemd-helper enable/ && prev !~ /was-enabled/ { bad = 1 }
			NF { prev = $0 }
			END { exit bad }' "$pkgcontrol/postinst"
	check "postinst restarts a running service on upgrade (try-restart)" grep -q 'deb-systemd-invoke try-restart balloonctl.service' "$pkgcontrol/postinst"
	check "postinst reloads udev and triggers the virtio balloon" \
		eval "grep -q 'udevadm control --reload' '$pkgcontrol/postinst' && grep -q 'udevadm trigger --action=add --subsystem-match=virtio --attr-match=device=0x0005' '$pkgcontrol/postinst'"
	for subsystem in module xen_memory vmbus; do
		check "postinst triggers the $subsystem balloon the rule matches" grep -q "udevadm trigger --action=add --subsystem-match=$subsystem" "$pkgcontrol/postinst"
	done
	check "prerm stops the service and then re-admits, on remove only" \
		eval "awk '/\"\\\$1\" = remove/{r=1} r&&/deb-systemd-invoke stop balloonctl.service/{s=NR} r&&/balloonctl readmit/{a=NR} END{exit !(s && a > s)}' '$pkgcontrol/prerm'"
	check "postrm purge removes /run/balloonctl" grep -q 'rm -rf /run/balloonctl' "$pkgcontrol/postrm"
	check "postrm removes the PCI config link" grep -q 'rm -f /run/balloonctl.virtio-config' "$pkgcontrol/postrm"
	check "the re-admit command exists in the packaged binary" \
		eval "'$bin' readmit --help | grep -q 'state-dir'"
	rc=0
	"$bin" readmit --state-dir "$tmp/no-state" >"$tmp/readmit.out" 2>&1 || rc=$?
	check "readmit with no state file: exit 0, nothing held, nothing created (got $rc)" \
		eval "[ $rc = 0 ] && grep -q 'nothing held' '$tmp/readmit.out' && [ ! -e '$tmp/no-state' ]"
fi

echo
echo "test-install: $passed passed, $failed failed"
[ "$failed" = 0 ]
