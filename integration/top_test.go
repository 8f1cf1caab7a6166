package integration

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// `sipdispatch top -once` against a running node under SIPp calls: one plain
// frame (no ANSI) with raft state, each destination's duid, state, priority,
// load/maxload, probe RTT and selection rate, and the request and reply
// rates taken from /metrics (docs/operations.md, "sipdispatch top").
func TestTopOnceShowsSetsAndRates(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	list := "1 " + gw.URI() + " 8 10 duid=gw-a;maxload=20\n1 sip:" + ip + ":9 4 5 duid=gw-off\n"
	n := startNode(t, nodeYAML("stateful", `ds_hash_size: 4
ds_ping_interval: 1
ds_probing_mode: 1
ds_ping_latency_stats: 1`, `- name: all
  dispatch: {set: 1, alg: 10}`), list)
	waitFor(t, "keepalives to gw-a", 20*time.Second, func() bool { return gw.Options() >= 2 })

	calls := startSIPp(t, 90*time.Second, callerArgs(n, 80, 10, 0)...)
	waitFor(t, "calls reaching gw-a", 20*time.Second, func() bool { return gw.Calls() >= 3 })
	out, err := exec.Command(binary, "top", "-once", "-interval", "1s", "-api", "http://"+n.APIAddr).CombinedOutput()
	if code, sout := calls.wait(t); code != 0 {
		t.Errorf("sipp exit %d:\n%s", code, tail(sout, 20))
	}
	frame := string(out)
	if err != nil {
		t.Fatalf("top -once: %v\n%s", err, frame)
	}
	t.Logf("top -once:\n%s", frame)
	if strings.Contains(frame, "\x1b") {
		t.Errorf("-once frame has ANSI codes")
	}
	lines := strings.Split(frame, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "raft Leader, leader n1") {
		t.Errorf("no raft line")
	}
	row := func(duid string) []string {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) == 8 && f[2] == duid {
				return f
			}
		}
		t.Fatalf("no row for %s", duid)
		return nil
	}
	// SET URI DUID STATE PRIO LOAD/MAX RTT SEL/s
	a := row("gw-a")
	if a[0] != "1" || a[1] != gw.URI() || a[3] != "active+probing" || a[4] != "10" || !strings.HasSuffix(a[5], "/20") {
		t.Errorf("gw-a row %q", a)
	}
	if a[6] == "-" || strings.Count(a[6], "/") != 2 {
		t.Errorf("gw-a RTT %q, want avg/est/max", a[6])
	}
	if r, _ := strconv.ParseFloat(a[7], 64); r <= 0 {
		t.Errorf("gw-a selections/s %q, want > 0 under calls", a[7])
	}
	if off := row("gw-off"); off[3] != "disabled" || off[4] != "5" || off[5] != "0/-" || off[7] != "0.0" {
		t.Errorf("gw-off row %q", off)
	}
	rate := func(prefix, key string) float64 {
		for _, l := range lines {
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				f := strings.Fields(rest)
				for i := 0; i+1 < len(f); i++ {
					if f[i] == key {
						v, _ := strconv.ParseFloat(f[i+1], 64)
						return v
					}
				}
			}
		}
		t.Errorf("no %q in the %q line", key, prefix)
		return 0
	}
	if r := rate("requests/s by method", "INVITE"); r <= 0 {
		t.Errorf("INVITE rate %v, want > 0", r)
	}
	if r := rate("requests/s by route", "all"); r <= 0 {
		t.Errorf("route all rate %v, want > 0", r)
	}
	if r := rate("replies/s by class", "2xx"); r <= 0 {
		t.Errorf("2xx rate %v, want > 0", r)
	}
	if !strings.Contains(frame, "set 1: 2 destinations,") {
		t.Errorf("no set summary")
	}
}
