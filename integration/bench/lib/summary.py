#!/usr/bin/env python3
"""Summarise ab.sh's runs into one Markdown table.
usage: summary.py ab|step OUT SCENARIO...
ab: per scenario the median CPU us/call of each proxy, the ratio sipdispatch/Kamailio, calls
ok/failed, peak PSS and SIPp's INVITE->180 p50/p99 (bucket upper bounds, ms).
step: per scenario and proxy the highest sustained rate and the figures at it; also writes
OUT/SCENARIO-PROXY.dat (rate, us/call, % calls ok) for plot.gp."""
import csv, os, statistics as st, sys

mode, out, scenarios = sys.argv[1], sys.argv[2], sys.argv[3:]
SIDES = ("kamailio", "sipdispatch")

def rows(path, label=None):
    if not os.path.exists(path):
        return []
    return [r for r in csv.DictReader(open(path), delimiter="\t")
            if not r["label"].endswith("-smoke") and (label is None or r["label"] == label)]

def us(r): return float(r["proxy_cpu_us_per_call"])
def okfail(rs):
    ok = sum(int(r["success"]) for r in rs)
    return "%d / %d" % (ok, sum(int(r["calls"]) for r in rs) - ok)
def lat(r): return "%s / %s" % (r["rt1_p50_ms"], r["rt1_p99_ms"])

if mode == "ab":
    print("| scenario | rate | Kamailio µs/call | sipdispatch µs/call | ratio | calls ok / failed (K; s) | peak PSS MB (K; s) | INVITE→180 p50 / p99 ms (K; s) |")
    print("|---|---|---|---|---|---|---|---|")
    for s in scenarios:
        by = {side: rows(os.path.join(out, s, "results.tsv"), side) for side in SIDES}
        if not all(by.values()):
            print("| %s | no results | | | | | | |" % s)
            continue
        k, d = (st.median(us(r) for r in by[x]) for x in SIDES)
        print("| %s | %s | %.0f | %.0f | %.2f | %s; %s | %d; %d | %s; %s |" % (
            s, by["sipdispatch"][0]["rate"], k, d, d / k, okfail(by["kamailio"]), okfail(by["sipdispatch"]),
            max(int(r["proxy_peak_pss_mb"]) for r in by["kamailio"]),
            max(int(r["proxy_peak_pss_mb"]) for r in by["sipdispatch"]),
            lat(by["kamailio"][-1]), lat(by["sipdispatch"][-1])))
else:
    print("| scenario | proxy | max sustained calls/s (first unsustained) | µs/call there | INVITE→180 p50 / p99 ms there |")
    print("|---|---|---|---|---|")
    for s in scenarios:
        for side in SIDES:
            rs = sorted(rows(os.path.join(out, "%s-%s" % (s, side), "results.tsv")), key=lambda r: int(r["rate"]))
            with open(os.path.join(out, "%s-%s.dat" % (s, side)), "w") as f:
                for r in rs:
                    f.write("%s %s %.3f\n" % (r["rate"], r["proxy_cpu_us_per_call"], 100 - float(r["fail_pct"])))
            good = [r for r in rs if r["verdict"] == "OK"]
            bad = [r for r in rs if r["verdict"] != "OK"]
            if not good:
                print("| %s | %s | none | | |" % (s, side))
                continue
            b = good[-1]
            print("| %s | %s | %s (%s) | %.0f | %s |" % (s, side, b["rate"], bad[0]["rate"] if bad else "none tried",
                                                        us(b), lat(b)))
