# bench/results.awk: bench/work/raw.txt (`key value` lines from sample,
# floor, balloonctl-bench and callgrind.awk) -> the results (`key value`):
# totals over the CPU windows, medians over the per-tick rounds, the goals
# and their verdicts. Keys are documented in bench/BENCHMARKS.md.in.

function val(k) { return (k in v) ? v[k] : "" }
function put(k, x) { out[k] = x; order[++count] = k }
function num(x, digits) { return sprintf("%." digits "f", x) }

# Median of the values of rK.<name> over the rounds.
function median_rounds(name,    r, n, a, i, j, t) {
	n = 0
	for (r = 1; ("r" r "." name) in v; r++) a[++n] = v["r" r "." name] + 0
	if (n == 0) return ""
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

{
	k = $1
	$1 = ""
	sub(/^ /, "")
	v[k] = $0
}

END {
	for (k in v) if (k ~ /^(info|machine|guest)\./) put(k, v[k])
	# The guest's idle CPU with events (make e2e): every kernel at or under
	# half of earlyoom's.
	guests = 0; guest_ok = 1
	for (k in v) if (k ~ /^guest\.[a-z]+\.ratio$/) { guests++; if (v[k] == "n/a" || v[k] + 0 > 0.5) guest_ok = 0 }
	put("goal.guest.verdict", guests == 0 ? "not measured (run make e2e first)" : (guest_ok ? "PASS" : "MISS"))

	# CPU windows.
	split("earlyoom daemon floor same hop thread sync", procs, " ")
	windows = 0
	for (w = 1; ("w" w ".daemon.cpu_ns") in v; w++) windows = w
	put("cpu.windows", windows)
	busy = 0; steal = 0
	for (w = 1; w <= windows; w++) { busy += v["w" w ".machine.busy_pct"]; steal += v["w" w ".machine.steal_pct"] }
	if (windows) { put("machine.busy_pct_windows", num(busy / windows, 1)); put("machine.steal_pct_windows", num(steal / windows, 1)) }
	for (i = 1; i in procs; i++) {
		p = procs[i]
		cpu = 0; wall = 0; wake = 0; lo = ""; hi = ""
		for (w = 1; w <= windows; w++) {
			cpu += v["w" w "." p ".cpu_ns"]; wall += v["w" w "." p ".wall_ns"]
			wake += v["w" w "." p ".wakeups_per_s"]
			x = v["w" w "." p ".cpu_us_per_s"] + 0
			if (lo == "" || x < lo) lo = x
			if (hi == "" || x > hi) hi = x
		}
		if (!windows || wall == 0) continue
		rate[p] = cpu * 1e6 / wall
		put(p ".cpu_us_per_s", num(rate[p], 1))
		put(p ".cpu_us_per_s_min", num(lo, 1))
		put(p ".cpu_us_per_s_max", num(hi, 1))
		put(p ".wakeups_per_s", num(wake / windows, 1))
		put(p ".threads", v["w" windows "." p ".threads"])
		put(p ".vmrss_kib_start", v["w1." p ".vmrss_kib_start"])
		put(p ".vmrss_kib_end", v["w" windows "." p ".vmrss_kib_end"])
		put(p ".vmrss_mib_end", num(v["w" windows "." p ".vmrss_kib_end"] / 1024, 1))
		put(p ".rssanon_kib_start", v["w1." p ".rssanon_kib_start"])
		put(p ".rssanon_kib_end", v["w" windows "." p ".rssanon_kib_end"])
		put(p ".rssfile_kib_end", v["w" windows "." p ".rssfile_kib_end"])
		put(p ".touched_kib", v["w" windows "." p ".touched_kib"])
		put(p ".vmlck_kib", v["w" windows "." p ".vmlck_kib"])
		put(p ".locked_kib", v["w" windows "." p ".locked_kib"])
		put(p ".locked_mib", num(v["w" windows "." p ".locked_kib"] / 1024, 1))
	}
	for (i = 1; i in procs; i++) {
		p = procs[i]
		if ((p in rate) && rate["earlyoom"] > 0) put(p ".vs_earlyoom", num(rate[p] / rate["earlyoom"], 2))
	}
	lo = ""; hi = ""
	for (w = 1; w <= windows; w++) {
		e = v["w" w ".earlyoom.cpu_us_per_s"] + 0
		if (e <= 0) continue
		x = v["w" w ".daemon.cpu_us_per_s"] / e
		if (lo == "" || x < lo) lo = x
		if (hi == "" || x > hi) hi = x
	}
	if (lo != "") { put("daemon.vs_earlyoom_min", num(lo, 2)); put("daemon.vs_earlyoom_max", num(hi, 2)) }

	# Warm cost per read / tick: medians over the rounds, in µs.
	n = split("floor.meminfo floor.vmstat floor.both swift.meminfo swift.vmstat swift.both swift.tick", names, " ")
	for (i = 1; i <= n; i++) {
		split("wall_ns_median wall_ns_p99 cpu_ns_median cpu_ns_p99", stats, " ")
		for (j = 1; j <= 4; j++) {
			m = median_rounds(names[i] "." stats[j])
			if (m == "") continue
			key = names[i] "." stats[j]
			sub(/_ns_/, "_us_", key)
			put(key, num(m / 1000, 1))
			warm[names[i] "." stats[j]] = m
		}
	}
	for (r = 1; ("r" r ".swift.tick.cpu_ns_median") in v; r++) rounds = r
	put("tick.rounds", rounds + 0)
	put("swift.tick.iterations", val("r1.swift.tick.iterations"))
	put("floor.both.iterations", val("r1.floor.both.iterations"))
	if (warm["floor.meminfo.cpu_ns_median"] > 0) put("swift.meminfo.vs_floor", num(warm["swift.meminfo.cpu_ns_median"] / warm["floor.meminfo.cpu_ns_median"], 2))
	if (warm["floor.vmstat.cpu_ns_median"] > 0) put("swift.vmstat.vs_floor", num(warm["swift.vmstat.cpu_ns_median"] / warm["floor.vmstat.cpu_ns_median"], 2))
	if (warm["floor.both.cpu_ns_median"] > 0) {
		put("swift.both.vs_floor", num(warm["swift.both.cpu_ns_median"] / warm["floor.both.cpu_ns_median"], 2))
		put("swift.tick.vs_floor", num(warm["swift.tick.cpu_ns_median"] / warm["floor.both.cpu_ns_median"], 2))
	}

	# Cold: one read or tick after each 1 s sleep.
	put("cold.count", val("floor.cold.reads"))
	split("floor.cold swift.cold_both swift.cold_tick", cold, " ")
	for (i = 1; i in cold; i++) {
		split("cpu_ns_median cpu_ns_p90 wall_ns_median", stats, " ")
		for (j = 1; j <= 3; j++) {
			key = cold[i] "." stats[j]
			if (!(key in v)) continue
			k2 = key
			sub(/_ns_/, "_us_", k2)
			put(k2, num(v[key] / 1000, 1))
		}
	}
	if (val("floor.cold.cpu_ns_median") > 0) {
		put("swift.cold_tick.vs_floor", num(v["swift.cold_tick.cpu_ns_median"] / v["floor.cold.cpu_ns_median"], 2))
		put("swift.cold_both.vs_floor", num(v["swift.cold_both.cpu_ns_median"] / v["floor.cold.cpu_ns_median"], 2))
	}

	# Memory over many ticks.
	for (k in v) if (k ~ /^swift\.memory\./) put(k, v[k])
	growth = val("swift.memory.rssanon_kib_after") - val("swift.memory.rssanon_kib_before")
	put("swift.memory.growth_kib", growth)

	# Callgrind.
	for (k in v) if (k ~ /^profile\./) put(k, v[k])
	if (val("profile.floor.instructions") > 0) {
		put("profile.tick.instructions_vs_floor", num(v["profile.tick.instructions"] / v["profile.floor.instructions"], 1))
		put("profile.tick.code_vs_floor", num(v["profile.tick.code_lines"] / v["profile.floor.code_lines"], 1))
	}

	# Goals.
	if ("daemon" in rate && rate["earlyoom"] > 0) {
		x = rate["daemon"] / rate["earlyoom"]
		put("goal.cpu.budget_us_per_s", num(rate["earlyoom"], 1))
		put("goal.cpu.verdict", x < 1 ? "PASS" : "MISS")
	}
	# Memory the guard keeps resident (and locked) after a minute or more:
	# the daemon's VmRSS at the end of the last CPU window.
	put("daemon.age_s", val("info.settle_s") + val("info.windows") * val("info.window_s"))
	rss = out["daemon.vmrss_kib_end"] + 0
	put("goal.rss.verdict", rss > 0 && rss <= 4096 ? "PASS" : "MISS")
	# The tick against the floor: each round's ratio (measured back to back,
	# so drifts of the machine cancel), then the median of the rounds' ratios.
	n = 0
	list = ""
	for (r = 1; ("r" r ".floor.both.cpu_ns_median") in v && ("r" r ".swift.tick.cpu_ns_median") in v; r++) {
		x = v["r" r ".swift.tick.cpu_ns_median"] / v["r" r ".floor.both.cpu_ns_median"]
		ratios[++n] = x
		list = list (n > 1 ? ", " : "") num(x, 2)
	}
	put("goal.tick.ratios", list)
	for (i = 2; i <= n; i++) { t = ratios[i]; for (j = i - 1; j >= 1 && ratios[j] > t; j--) ratios[j + 1] = ratios[j]; ratios[j + 1] = t }
	if (n) {
		x = n % 2 ? ratios[(n + 1) / 2] : (ratios[n / 2] + ratios[n / 2 + 1]) / 2
		put("goal.tick.ratio", num(x, 2))
		put("goal.tick.ratio_min", num(ratios[1], 2))
		put("goal.tick.ratio_max", num(ratios[n], 2))
		put("goal.tick.budget_us", num(2 * warm["floor.both.cpu_ns_median"] / 1000, 1))
		put("goal.tick.verdict", x <= 2 ? "PASS" : "MISS")
	}
	anon = out["daemon.rssanon_kib_end"] + 0
	if (val("swift.memory.rssanon_kib_after") + 0 > anon) anon = v["swift.memory.rssanon_kib_after"] + 0
	put("goal.anon.worst_kib", anon)
	put("goal.anon.verdict", anon > 0 && anon <= 2048 ? "PASS" : "MISS")
	# Flat: no growth over the second half of the ticks (the first half may
	# still raise the heap's high-water mark: the first process scans and
	# rediscoveries allocate their most).
	late = val("swift.memory.rssanon_kib_after") - val("swift.memory.rssanon_kib_half")
	put("swift.memory.growth_second_half_kib", late)
	put("goal.flat.verdict", val("swift.memory.rssanon_kib_after") != "" && late <= 8 ? "PASS" : "MISS")
	put("daemon.rssanon_growth_kib", out["daemon.rssanon_kib_end"] - out["daemon.rssanon_kib_start"])

	for (i = 1; i <= count; i++) print order[i], out[order[i]]
}
