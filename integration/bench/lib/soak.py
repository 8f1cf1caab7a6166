#!/usr/bin/env python3
"""The sampler and the verdict of soak.sh.

usage: soak.py sample RUNDIR SECS [METRICS_URL]
         waits for run.sh's "proxy ... up: pid N" line in RUNDIR/run.log, then every SECS seconds
         appends to RUNDIR/memory.tsv the proxy tree's summed PSS and RSS, its CPU, SIPp's calls
         (RUNDIR/once-*/stat.csv) and, with METRICS_URL (sipdispatch's /metrics), the Go heap;
         stops when SIPp has exited (once-*/uac.time written) or the proxy is gone.
       soak.py verdict FLAT_PCT RUNDIR [KAMAILIO_RUNDIR]
         prints the memory at the start, middle and end, the flatness verdict and run.sh's
         results; exits 1 when memory grows or run.sh's verdict is FAIL.

Flatness rule: the samples taken while calls ran are cut into thirds by time; the first third
is warm-up (the 32 s transaction timers fill). Memory is flat when the mean of the last third is
at most FLAT_PCT % above the mean of the middle third, for the summed PSS and, for sipdispatch,
the Go heap in use. The least-squares slope over the last two thirds is printed beside it (MB/h).
"""
import csv, glob, os, re, statistics as st, sys, time, urllib.request

CLK = os.sysconf("SC_CLK_TCK")
COLS = ["t_s", "pss_mb", "rss_mb", "heap_inuse_mb", "heap_alloc_mb", "go_sys_mb", "next_gc_mb",
        "goroutines", "gc_count", "proxy_cpu_s", "calls_current", "calls_ok", "calls_failed"]
METRICS = {"go_memstats_heap_inuse_bytes": "heap_inuse_mb", "go_memstats_heap_alloc_bytes": "heap_alloc_mb",
           "go_memstats_sys_bytes": "go_sys_mb", "go_memstats_next_gc_bytes": "next_gc_mb",
           "go_goroutines": "goroutines", "go_gc_duration_seconds_count": "gc_count"}


def tree(root):
    """root and its descendants, from /proc/*/stat."""
    kids = {}
    for st_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(st_path).read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        kids.setdefault(int(f[1]), []).append(int(st_path.split("/")[2]))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_sample(pids):
    pss = rss = ticks = 0
    for p in pids:
        try:
            for line in open("/proc/%d/smaps_rollup" % p):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
            s = open("/proc/%d/stat" % p).read()
            f = s[s.rindex(")") + 2:].split()
            ticks += int(f[11]) + int(f[12])
        except (OSError, ValueError):
            pass
    return pss / 1024, rss / 1024, ticks / CLK


def metrics_sample(url):
    vals = {}
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return vals
    for line in body.splitlines():
        name, _, v = line.partition(" ")
        if name in METRICS:
            x = float(v)
            vals[METRICS[name]] = x / 2**20 if METRICS[name].endswith("_mb") else x
    return vals


def sipp_sample(rundir):
    """CurrentCall, SuccessfulCall(C), FailedCall(C) from the last row of SIPp's stat.csv."""
    files = glob.glob(os.path.join(rundir, "once-*", "stat.csv"))
    if not files:
        return {}
    try:
        with open(files[0], "rb") as f:
            hdr = f.readline().decode().rstrip("\n").split(";")
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            last = f.read().decode(errors="replace").rstrip("\n").split("\n")[-1].split(";")
    except OSError:
        return {}
    if len(last) != len(hdr):
        return {}
    d = dict(zip(hdr, last))
    return {"calls_current": d.get("CurrentCall", ""), "calls_ok": d.get("SuccessfulCall(C)", ""),
            "calls_failed": d.get("FailedCall(C)", "")}


def sample(rundir, secs, url):
    log = os.path.join(rundir, "run.log")
    pid = None
    while pid is None:  # run.sh may wait for the bench lock first
        try:
            m = re.search(r"proxy \S+ up: pid (\d+)", open(log).read())
            pid = int(m.group(1)) if m else None
        except OSError:
            pass
        if pid is None:
            time.sleep(1)
    out = open(os.path.join(rundir, "memory.tsv"), "w")
    out.write("\t".join(COLS) + "\n")
    t0 = time.monotonic()
    # GNU time creates uac.time when SIPp starts and writes it when SIPp exits
    done = lambda: any(os.path.getsize(f) > 0 for f in glob.glob(os.path.join(rundir, "once-*", "uac.time")))
    while os.path.exists("/proc/%d" % pid) and not done():
        pss, rss, cpu = proc_sample(tree(pid))
        row = {"t_s": "%.1f" % (time.monotonic() - t0), "pss_mb": "%.1f" % pss, "rss_mb": "%.1f" % rss,
               "proxy_cpu_s": "%.2f" % cpu}
        if url:
            row.update({k: ("%.1f" % v if k.endswith("_mb") else "%d" % v) for k, v in metrics_sample(url).items()})
        row.update(sipp_sample(rundir))
        out.write("\t".join(str(row.get(c, "")) for c in COLS) + "\n")
        out.flush()
        time.sleep(max(0.0, secs - (time.monotonic() - t0) % secs))


def load(rundir):
    rows = list(csv.DictReader(open(os.path.join(rundir, "memory.tsv")), delimiter="\t"))
    # only the samples taken while calls ran (the proxy is up a second before SIPp starts)
    return [r for r in rows if r["calls_ok"] not in ("", "0") or r["calls_current"] not in ("", "0")]


def thirds(rows, col):
    t = [float(r["t_s"]) for r in rows]
    lo, hi = t[0], t[-1]
    cut1, cut2 = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
    v = lambda r: float(r[col])
    first = [v(r) for r in rows if float(r["t_s"]) <= cut1]
    mid = [v(r) for r in rows if cut1 < float(r["t_s"]) <= cut2]
    last = [v(r) for r in rows if float(r["t_s"]) > cut2]
    tail = [(float(r["t_s"]), v(r)) for r in rows if float(r["t_s"]) > cut1]
    mx = st.mean(x for x, _ in tail)
    my = st.mean(y for _, y in tail)
    den = sum((x - mx) ** 2 for x, _ in tail)
    slope_h = 3600 * sum((x - mx) * (y - my) for x, y in tail) / den if den else 0.0
    return st.mean(first), st.mean(mid), st.mean(last), max(v(r) for r in rows), slope_h


def result(rundir):
    rs = [r for r in csv.DictReader(open(os.path.join(rundir, "results.tsv")), delimiter="\t")
          if not r["label"].endswith("-smoke")]
    return rs[-1] if rs else None


def verdict(flat_pct, rundir, label):
    ok = True
    rows = load(rundir)
    r = result(rundir)
    if len(rows) < 6 or r is None:
        print("%s: too few samples (%d) or no result in %s" % (label, len(rows), rundir))
        return False, None
    span = float(rows[-1]["t_s"]) - float(rows[0]["t_s"])
    print("%s: %d samples over %.1f min; calls %s ok, %s failed (%s %% incl. unplaced), %s calls/s achieved; "
          "proxy CPU %s µs/call; run.sh verdict %s"
          % (label, len(rows), span / 60, r["success"], r["failed"], r["fail_pct"], r["achieved_cps"],
             r["proxy_cpu_us_per_call"], r["verdict"]))
    ok = r["verdict"] == "OK"
    cols = [("pss_mb", "PSS (tree, summed)"), ("rss_mb", "RSS (tree, summed)")]
    if rows[0]["heap_inuse_mb"]:
        cols += [("heap_inuse_mb", "Go heap in use"), ("go_sys_mb", "Go runtime total (sys)")]
    print("  %-24s %8s %8s %8s %8s %10s  %s" % ("MB (mean per third)", "start", "middle", "end", "peak",
                                               "slope MB/h", "last/middle"))
    for col, name in cols:
        a, b, c, peak, slope = thirds(rows, col)
        judged = col in ("pss_mb", "heap_inuse_mb")
        grows = c > b * (1 + flat_pct / 100)
        mark = ("GROWS" if grows else "flat") if judged else ""
        print("  %-24s %8.1f %8.1f %8.1f %8.1f %10.1f  %.3f %s" % (name, a, b, c, peak, slope, c / b, mark))
        if judged and grows:
            ok = False
    # CPU per call over the same thirds, from the sampled CPU and SIPp's completed calls
    cpu = []
    for part in (rows[: len(rows) // 3], rows[len(rows) // 3: 2 * len(rows) // 3], rows[2 * len(rows) // 3:]):
        dc = float(part[-1]["proxy_cpu_s"]) - float(part[0]["proxy_cpu_s"])
        dn = int(part[-1]["calls_ok"] or 0) - int(part[0]["calls_ok"] or 0)
        cpu.append("%.0f" % (dc * 1e6 / dn) if dn > 0 else "na")
    print("  CPU µs/call per third: %s" % " / ".join(cpu))
    return ok, r


def main():
    if sys.argv[1] == "sample":
        sample(sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "")
        return 0
    flat_pct = float(sys.argv[2])
    print("rule: flat when the mean of the last third of the run is at most %g %% above the middle "
          "third's, for PSS and the Go heap (first third = warm-up)" % flat_pct)
    ok, sd = verdict(flat_pct, sys.argv[3], "sipdispatch")
    if len(sys.argv) > 4:
        kok, kam = verdict(flat_pct, sys.argv[4], "kamailio")
        ok = ok and kok
        if sd and kam:
            print("sipdispatch / Kamailio: CPU per call %.2f, peak PSS %.2f"
                  % (float(sd["proxy_cpu_us_per_call"]) / float(kam["proxy_cpu_us_per_call"]),
                     float(sd["proxy_peak_pss_mb"]) / max(1.0, float(kam["proxy_peak_pss_mb"]))))
    print("VERDICT: %s" % ("memory flat, calls OK" if ok else "FAIL (memory grows or calls failed; see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
