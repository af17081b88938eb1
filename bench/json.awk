# bench/json.awk: results.txt (`key value`) -> one flat JSON object. Numbers
# stay numbers; everything else becomes a string.
function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); return s }
{
	k = $1
	$1 = ""
	sub(/^ /, "")
	x = ($0 ~ /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/) ? $0 : "\"" esc($0) "\""
	printf "%s  \"%s\": %s", (NR > 1 ? ",\n" : "{\n"), esc(k), x
}
END { print (NR ? "\n}" : "{}") }
