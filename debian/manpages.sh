#!/bin/sh
# Tidies the pages swift-argument-parser's generate-manual writes (called by
# debian/rules with their directory), for man-db and lintian:
#  - balloonctl.<command>.8 becomes balloonctl-<command>.8, named so in NAME
#    (whatis cannot index "balloonctl run", with its space), while the
#    SYNOPSIS still shows the command as typed;
#  - no page for ArgumentParser's built-in `help` command;
#  - a blank line (groff warns) becomes a paragraph break;
#  - no "EXIT STATUS" section: its generic text says 0 or >0, while each
#    page's DESCRIPTION lists the real statuses (64 included).
set -eu
dir=$1

rm -f "$dir/balloonctl.help.8"
for page in "$dir"/balloonctl.*.8; do
	[ -e "$page" ] || continue
	command=$(basename "$page" .8)
	command=${command#balloonctl.}
	upper=$(echo "$command" | tr '[:lower:]' '[:upper:]')
	sed -i \
		-e "s/^\.Dt BALLOONCTL\.$upper 8\$/.Dt BALLOONCTL-$upper 8/" \
		-e "s/^\.Nm \"balloonctl $command\"\$/.Nm balloonctl-$command/" \
		-e "s/^\.Nm\$/.Nm \"balloonctl $command\"/" \
		"$page"
	mv "$page" "$dir/balloonctl-$command.8"
done
for page in "$dir"/*.8; do
	sed -i \
		-e '/^\.Xr balloonctl\.help 8/d' \
		-e 's/^\.Xr balloonctl\.\([a-z-]*\) 8/.Xr balloonctl-\1 8/' \
		-e 's/^$/.Pp/' \
		-e '/^\.Sh "EXIT STATUS"$/d' \
		-e '/^\.Ex -std$/d' \
		-e 's/^\.Nd "\(.*\)"$/.Nd \1/' \
		"$page"
done
