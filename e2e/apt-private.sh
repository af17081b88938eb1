# Sourced by the e2e fetch scripts: apt against a PRIVATE state directory (its
# own package lists and cache) with the machine's own sources, so packages are
# fetched with `apt-get download` and unpacked with `dpkg-deb -x` without
# touching the machine's apt state or installing anything.
#
# apt_private_setup <state-dir> <log>: runs `apt-get update` there and sets $o,
# the options every later apt-get/apt-cache call passes.
apt_private_setup() {
	st=$1
	mkdir -p "$st/etc" "$st/lists/partial" "$st/cache/archives/partial"
	: >"$st/etc/sources.list"
	[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$st/etc/sources.list"
	rm -rf "$st/etc/sources.list.d"
	mkdir -p "$st/etc/sources.list.d"
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] && cp "$f" "$st/etc/sources.list.d/"
	done
	o="-o Dir::Etc::SourceList=$st/etc/sources.list -o Dir::Etc::SourceParts=$st/etc/sources.list.d"
	o="$o -o Dir::State::Lists=$st/lists -o Dir::Cache=$st/cache -o Acquire::Retries=3 -q"
	# shellcheck disable=SC2086
	apt-get $o update >"$2" 2>&1
}
