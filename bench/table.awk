# bench/table.awk: results.txt -> the summary table on standard output.
{
	k = $1
	$1 = ""
	sub(/^ /, "")
	v[k] = $0
}
function g(k) { return (k in v) ? v[k] : "n/a" }
END {
	printf "\n%-44s %-34s %-22s %s\n", "measure", "result", "goal", "verdict"
	printf "%-44s %-34s %-22s %s\n", "CPU per idle second (daemon vs earlyoom)", \
		g("daemon.cpu_us_per_s") " vs " g("earlyoom.cpu_us_per_s") " us/s = " g("daemon.vs_earlyoom") "x", "< 1x earlyoom", g("goal.cpu.verdict")
	printf "%-44s %-34s %-22s %s\n", "cost of a tick, warm CPU (vs C floor)", \
		g("swift.tick.cpu_us_median") " vs " g("floor.both.cpu_us_median") " us = " g("goal.tick.ratio") "x", "<= 2x floor", g("goal.tick.verdict")
	printf "%-44s %-34s %-22s %s\n", "private memory RssAnon (daemon, bench)", \
		g("daemon.rssanon_kib_end") " KiB, " g("swift.memory.rssanon_kib_after") " KiB", "<= 2048 KiB", g("goal.anon.verdict")
	printf "%-44s %-34s %-22s %s\n", "RssAnon over " g("swift.memory.ticks") " ticks", \
		g("swift.memory.rssanon_kib_before") " -> " g("swift.memory.rssanon_kib_half") " -> " g("swift.memory.rssanon_kib_after") " KiB", "flat 2nd half (<=8K)", g("goal.flat.verdict")
	printf "%-44s %-34s %-22s %s\n", "VmRSS after " g("daemon.age_s") " s (daemon, earlyoom)", \
		g("daemon.vmrss_mib_end") " MiB, " g("earlyoom.vmrss_mib_end") " MiB", "<= 4 MiB", g("goal.rss.verdict")
	printf "%-44s %-34s %-22s %s\n", "resident and locked (daemon; VmLck)", \
		g("daemon.locked_kib") " KiB; " g("daemon.vmlck_kib") " KiB", "reported", "-"
	printf "\nalso: C floor daemon %s us/s (%sx earlyoom), the same reads as the daemon (meminfo each tick, vmstat every 10th) %s us/s (%sx);\n", \
		g("floor.cpu_us_per_s"), g("floor.vs_earlyoom"), g("same.cpu_us_per_s"), g("same.vs_earlyoom")
	printf "      loop models hop %s, thread %s, sync %s us/s;\n", \
		g("hop.cpu_us_per_s"), g("thread.cpu_us_per_s"), g("sync.cpu_us_per_s")
	printf "      cold tick %s us vs cold C read %s us; callgrind %s vs %s instructions per tick, %s vs %s KiB of code\n", \
		g("swift.cold_tick.cpu_us_median"), g("floor.cold.cpu_us_median"), g("profile.tick.instructions"), \
		g("profile.floor.instructions"), g("profile.tick.code_kib"), g("profile.floor.code_kib")
	printf "      machine %s%% busy during the CPU windows (steal %s%%), load %s -> %s\n", \
		g("machine.busy_pct_windows"), g("machine.steal_pct_windows"), g("machine.loadavg_before"), g("machine.loadavg_after")
}
