# bench/render.awk: results.txt, then a template; prints the template with
# every @key@ replaced by the key's value ("n/a" when it was not measured).
FNR == NR {
	k = $1
	$1 = ""
	sub(/^ /, "")
	v[k] = $0
	next
}
{
	line = $0
	out = ""
	while (match(line, /@[a-z0-9_.]+@/)) {
		k = substr(line, RSTART + 1, RLENGTH - 2)
		out = out substr(line, 1, RSTART - 1) ((k in v) ? v[k] : "n/a")
		line = substr(line, RSTART + RLENGTH)
	}
	print out line
}
