# Summarises one callgrind dump made with --dump-instr=yes (bench/run): the
# instructions executed (Ir), and how much distinct code they came from:
# distinct instructions, 64-byte cache lines and 4 KiB pages of code. The
# last two are what a tick has to bring back into the caches and the TLB
# after the daemon slept.  Usage: awk -v prefix=NAME -f callgrind.awk DUMP
function hex(s,    i, v) {
	v = 0
	s = tolower(substr(s, 3))
	for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
	return v
}
/^summary:/ { ir = $2; next }
/^ob=/ { ob = $0; sub(/^ob=\(/, "", ob); sub(/\).*/, "", ob); next }
/^[a-z]+=/ { next }
/^(0x[0-9a-fA-F]+|[-+][0-9]+|\*)( |$)/ {
	p = $1
	if (p ~ /^0x/) cur = hex(p)
	else if (p ~ /^\+/) cur += substr(p, 2) + 0
	else if (p ~ /^-/) cur -= substr(p, 2) + 0
	key = ob ":" cur
	if (!(key in seen)) { seen[key] = 1; n++ }
	key = ob ":" int(cur / 64)
	if (!(key in lines)) { lines[key] = 1; nl++ }
	key = ob ":" int(cur / 4096)
	if (!(key in pages)) { pages[key] = 1; np++ }
}
END {
	printf "%s.instructions %d\n", prefix, ir
	printf "%s.instructions_distinct %d\n", prefix, n
	printf "%s.code_lines %d\n", prefix, nl
	printf "%s.code_kib %.1f\n", prefix, nl * 64 / 1024
	printf "%s.code_pages %d\n", prefix, np
}
