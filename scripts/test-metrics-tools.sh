#!/bin/sh
# The metrics file and the alert rules against the tools users run them with:
# Debian's node_exporter (its textfile collector) and promtool.
#
#   1. promtool check rules / test rules on monitoring/balloonctl-alerts.yml
#      (balloonctl-alerts.test.yml: series that fire each alert and series
#      that must not).
#   2. The real daemon, `run --mode report --no-probe-target --no-events` on this machine
#      (report mode changes nothing; a temporary state directory), writes its
#      own file; `promtool check metrics` finds nothing to say about it.
#   3. node_exporter with only the textfile collector, on a free localhost
#      port, serves it: no node_textfile_scrape_error 1, every balloonctl
#      family of the file in the scrape, the heartbeat within seconds of now.
#   4. SIGTERM: the daemon exits 0, the file is gone, the next scrape has no
#      balloonctl series. SIGKILL (a crash): the file stays.
#
# The tools are not installed (their packages' postinst would start daemons):
# `apt-get download` + `dpkg-deb -x` into a cache under monitoring/work (git
# ignored); the versions used are in monitoring/work/tools/versions.txt. Any
# missing tool fails the script: it never skips.
#
# Environment:
#   BALLOONCTL_BIN       the balloonctl to run (default .build/debug/balloonctl)
#   METRICS_TOOLS_WORK   cache and scratch directory (default monitoring/work)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bin=${BALLOONCTL_BIN:-.build/debug/balloonctl}
work=${METRICS_TOOLS_WORK:-$here/monitoring/work}
tools=$work/tools

log() { echo "test-metrics-tools: $*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

[ -x "$bin" ] || die "no balloonctl at $bin (swift build, or BALLOONCTL_BIN=<binary>)"

# --- the tools ---------------------------------------------------------------
promtool=$tools/root/usr/bin/promtool
exporter=$tools/root/usr/bin/prometheus-node-exporter
if [ ! -x "$promtool" ] || [ ! -x "$exporter" ]; then
	log "fetching prometheus and prometheus-node-exporter (apt-get download, not installed)"
	rm -rf "$tools"
	mkdir -p "$tools/debs"
	# apt's _apt user must be able to write the download directory.
	chmod 0755 "$work" "$tools" "$tools/debs" 2>/dev/null || true
	(cd "$tools/debs" && apt-get download -q prometheus prometheus-node-exporter) ||
		die "apt-get download prometheus prometheus-node-exporter failed (run apt-get update?)"
	for deb in "$tools"/debs/*.deb; do
		dpkg-deb -x "$deb" "$tools/root"
		dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$tools/versions.txt"
	done
	rm -rf "$tools/debs"
fi
[ -x "$promtool" ] || die "promtool missing from the prometheus package ($promtool)"
[ -x "$exporter" ] || die "node_exporter missing from prometheus-node-exporter ($exporter)"
log "tools: $(paste -sd',' "$tools/versions.txt" 2>/dev/null || echo unknown versions)"

# --- the alert rules ---------------------------------------------------------
"$promtool" check rules monitoring/balloonctl-alerts.yml || die "promtool check rules"
(cd monitoring && "$promtool" test rules balloonctl-alerts.test.yml) || die "promtool test rules"

# --- the daemon's own file ---------------------------------------------------
scratch=$(mktemp -d "${TMPDIR:-/tmp}/balloonctl-metrics.XXXXXX")
daemon=""
exporter_pid=""
cleanup() {
	[ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null || true
	[ -z "$exporter_pid" ] || kill -TERM "$exporter_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$scratch"
}
trap cleanup EXIT INT TERM
textdir=$scratch/textfile
mkdir -m 0755 "$textdir"
prom=$textdir/balloonctl.prom

start_daemon() {
	"$bin" run --mode report --no-probe-target --no-events --interval 0.5 --log-level info \
		--state-dir "$scratch/state" --metrics-file "$prom" 2>>"$scratch/daemon.log" &
	daemon=$!
	i=0
	until [ -s "$prom" ]; do
		kill -0 "$daemon" 2>/dev/null || die "the daemon exited before writing $prom: $(cat "$scratch/daemon.log")"
		i=$((i + 1))
		[ $i -le 300 ] || die "no $prom after 30 s: $(cat "$scratch/daemon.log")"
		sleep 0.1
	done
}

start_daemon
out=$("$promtool" check metrics <"$prom" 2>&1) || die "promtool check metrics: $out"
[ -z "$out" ] || die "promtool check metrics has remarks: $out"
log "promtool check metrics: clean ($(grep -c '^balloonctl_' "$prom") samples)"

# Every family of the file, and those that must be there on any machine
# (the balloon families need a balloon; this machine's is used when it has one).
families=$(sed -n 's/^# TYPE \(balloonctl_[a-z_]*\) .*/\1/p' "$prom")
for need in balloonctl_info balloonctl_last_tick_timestamp_seconds balloonctl_limit_bytes \
	balloonctl_guest_bytes balloonctl_pinned_bytes; do
	echo "$families" | grep -qx "$need" || die "$need is not in $prom"
	grep -q "^$need[{ ]" "$prom" || die "$need has no sample in $prom"
done
grep -q '^balloonctl_info{version="[^"]*",mode="report"} 1$' "$prom" ||
	die "balloonctl_info does not say mode=\"report\": $(grep '^balloonctl_info' "$prom")"

# --- node_exporter's textfile collector --------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$exporter" --web.listen-address="127.0.0.1:$port" --collector.disable-defaults \
	--collector.textfile --collector.textfile.directory="$textdir" 2>"$scratch/exporter.log" &
exporter_pid=$!
scrape() {
	python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
		"http://127.0.0.1:$port/metrics" >"$1" 2>"$scratch/scrape.err"
}
i=0
until scrape "$scratch/scrape.txt"; do
	kill -0 "$exporter_pid" 2>/dev/null || die "node_exporter exited: $(cat "$scratch/exporter.log")"
	i=$((i + 1))
	[ $i -le 100 ] || die "node_exporter does not answer on 127.0.0.1:$port: $(cat "$scratch/scrape.err")"
	sleep 0.1
done
grep -q '^node_textfile_scrape_error 0$' "$scratch/scrape.txt" ||
	die "node_textfile_scrape_error is not 0: $(grep node_textfile "$scratch/scrape.txt"; cat "$scratch/exporter.log")"
grep -q '^node_textfile_mtime_seconds{file="[^"]*balloonctl.prom"}' "$scratch/scrape.txt" ||
	die "node_exporter did not read balloonctl.prom: $(grep node_textfile "$scratch/scrape.txt")"
served=0
for family in $families; do
	if grep -q "^$family[{ ]" "$prom"; then
		grep -q "^$family[{ ]" "$scratch/scrape.txt" || die "$family is in $prom but not in the scrape"
		served=$((served + 1))
	else
		log "$family: no sample on this machine (HELP/TYPE only)"
	fi
done
now=$(date +%s)
# node_exporter writes it as a float (1.7e+09).
beat=$(awk '$1 == "balloonctl_last_tick_timestamp_seconds" { printf "%d", $2 }' "$scratch/scrape.txt")
[ -n "$beat" ] || die "no balloonctl_last_tick_timestamp_seconds in the scrape"
[ $((now - beat)) -le 60 ] && [ $((beat - now)) -le 5 ] ||
	die "the heartbeat $beat is not within a minute of now ($now)"
log "node_exporter $port: no scrape error, $served families served, heartbeat $((now - beat)) s old"

# --- a clean stop removes the file; a crash keeps it -------------------------
kill -TERM "$daemon"
rc=0
wait "$daemon" || rc=$?
daemon=""
[ $rc -eq 0 ] || die "the daemon exited $rc after SIGTERM: $(tail -3 "$scratch/daemon.log")"
[ ! -e "$prom" ] || die "$prom is still there after SIGTERM"
scrape "$scratch/after.txt" || die "node_exporter stopped answering"
! grep -q '^balloonctl_' "$scratch/after.txt" || die "node_exporter still serves balloonctl series after SIGTERM"
log "SIGTERM: exit 0, $prom removed, no balloonctl series in the next scrape"

start_daemon
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=""
[ -s "$prom" ] || die "$prom is gone after SIGKILL (a crash must leave it, so its heartbeat goes stale)"
log "SIGKILL: $prom kept"
log "passed"
