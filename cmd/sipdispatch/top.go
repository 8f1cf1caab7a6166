package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
)

// runTop is `top`: a live view of one node (docs/operations.md, "sipdispatch
// top"). Each frame samples dispatcher.list (state, priority, probe RTT),
// dispatcher.load (duid, load, maxload), cluster.raft and /metrics; rates
// are the counters' growth since the previous sample. -once takes two
// samples -interval apart and prints one plain frame.
func runTop(args []string, stdout, stderr io.Writer) error {
	a := newAPIFlags("top", "", stderr)
	interval := a.fs.Duration("interval", 2*time.Second, "time between frames; rates are per second over it")
	once := a.fs.Bool("once", false, "print one frame without ANSI codes and exit (its rates are over one -interval)")
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return fmt.Errorf("%w: -interval must be at least 100ms", errUsage)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	prev, err := sampleTop(ctx, c)
	if err != nil {
		return err
	}
	if !*once {
		drawLive(stdout, renderTop(prev, nil, *interval, true))
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := sampleTop(ctx, c)
		if *once {
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, renderTop(cur, prev, *interval, false))
			return err
		}
		if err != nil {
			// The node may be restarting: say so and keep trying.
			drawLive(stdout, renderTop(prev, nil, *interval, true)+"\n"+ansi(ansiRed, "error: "+err.Error())+"\n")
			continue
		}
		drawLive(stdout, renderTop(cur, prev, *interval, true))
		prev = cur
	}
}

// drawLive replaces the screen with frame: cursor home, clear, frame.
func drawLive(w io.Writer, frame string) { io.WriteString(w, "\x1b[H\x1b[2J"+frame) }

// topSample is one sample of a node.
type topSample struct {
	at       time.Time
	api      string
	raft     string // one line, "" when cluster.raft failed
	sets     []topSet
	requests map[[2]string]float64 // {method, route} → total
	replies  map[string]float64    // class → total
	selected map[topKey]float64    // destination → selections total
}

type topKey struct {
	set int
	uri string
}

type topSet struct {
	id    int
	calls int
	dests []topDest
}

type topDest struct {
	uri, duid, flags string
	priority         int
	load, maxload    int
	rtt              string // "avg/est/max" ms, "-" without ds_ping_latency_stats
}

// sampleTop reads the node's sets (dispatcher.list in selection order, with
// dispatcher.load's duid/load/maxload), raft state and counters.
func sampleTop(ctx context.Context, c *api.Client) (*topSample, error) {
	s := &topSample{at: time.Now()}
	res, err := c.Call(ctx, "dispatcher.list")
	if err != nil {
		return nil, err
	}
	var l listResult
	if err := json.Unmarshal(res, &l); err != nil {
		return nil, fmt.Errorf("dispatcher.list: unexpected result: %w", err)
	}
	res, err = c.Call(ctx, "dispatcher.load")
	if err != nil {
		return nil, err
	}
	var ld loadResult
	if err := json.Unmarshal(res, &ld); err != nil {
		return nil, fmt.Errorf("dispatcher.load: unexpected result: %w", err)
	}
	type loadInfo struct {
		duid          string
		load, maxload int
	}
	loads, calls := map[topKey]loadInfo{}, map[int]int{}
	for _, set := range ld.SETS {
		calls[set.ID] = set.CALLS
		for _, t := range set.TARGETS {
			li := loadInfo{duid: "-", load: t.LOAD, maxload: t.MAXLOAD}
			if t.DUID != nil {
				li.duid = *t.DUID
			}
			loads[topKey{set.ID, t.URI}] = li
		}
	}
	for _, r := range l.RECORDS {
		set := topSet{id: r.SET.ID, calls: calls[r.SET.ID]}
		for _, t := range r.SET.TARGETS {
			d := t.DEST
			li := loads[topKey{set.id, d.URI}]
			td := topDest{uri: d.URI, duid: cmp.Or(li.duid, "-"), flags: d.FLAGS, priority: d.PRIORITY,
				load: li.load, maxload: li.maxload, rtt: "-"}
			if d.LATENCY != nil {
				td.rtt = fmt.Sprintf("%.1f/%.1f/%d", d.LATENCY.AVG, d.LATENCY.EST, d.LATENCY.MAX)
			}
			set.dests = append(set.dests, td)
		}
		s.sets = append(s.sets, set)
	}
	slices.SortStableFunc(s.sets, func(x, y topSet) int { return cmp.Compare(x.id, y.id) })

	if res, err := c.Call(ctx, "cluster.raft"); err == nil {
		var r struct {
			STATE, LEADER_ID                  string
			TERM, COMMIT_INDEX, APPLIED_INDEX uint64
		}
		if json.Unmarshal(res, &r) == nil {
			s.raft = fmt.Sprintf("raft %s, leader %s, term %d, commit %d, applied %d",
				r.STATE, cmp.Or(r.LEADER_ID, "none"), r.TERM, r.COMMIT_INDEX, r.APPLIED_INDEX)
		}
	}

	body, err := c.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	s.requests, s.replies, s.selected = map[[2]string]float64{}, map[string]float64{}, map[topKey]float64{}
	for _, m := range fams["sipdispatch_sip_requests_total"].GetMetric() {
		l := labels(m.GetLabel())
		s.requests[[2]string{l["method"], l["route"]}] += m.GetCounter().GetValue()
	}
	for _, m := range fams["sipdispatch_sip_replies_total"].GetMetric() {
		s.replies[labels(m.GetLabel())["class"]] += m.GetCounter().GetValue()
	}
	for _, m := range fams["sipdispatch_selections_total"].GetMetric() {
		l := labels(m.GetLabel())
		set, _ := strconv.Atoi(l["set"])
		s.selected[topKey{set, l["uri"]}] += m.GetCounter().GetValue()
	}
	return s, nil
}

func labels[L interface {
	GetName() string
	GetValue() string
}](ls []L) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.GetName()] = l.GetValue()
	}
	return m
}

// SGR codes of one length each, so that a column whose every cell carries
// one (and the reset) keeps tabwriter's widths aligned.
const (
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiGrey   = "\x1b[90m"
	ansiPlain  = "\x1b[39m"
	ansiReset  = "\x1b[0m"
)

func ansi(code, s string) string { return code + s + ansiReset }

// stateWord names a destination's state from Kamailio's flag letters.
func stateWord(flags string) (word, color string) {
	switch {
	case strings.HasPrefix(flags, "A"):
		word, color = "active", ansiGreen
	case strings.HasPrefix(flags, "T"):
		word, color = "trying", ansiYellow
	case strings.HasPrefix(flags, "I"):
		word, color = "inactive", ansiRed
	case strings.HasPrefix(flags, "D"):
		word, color = "disabled", ansiGrey
	default:
		word, color = flags, ansiPlain
	}
	if strings.HasSuffix(flags, "P") {
		word += "+probing"
	}
	return word, color
}

// renderTop draws cur; rates are against prev (nil: not known yet). color
// adds ANSI colours to the state column.
func renderTop(cur, prev *topSample, interval time.Duration, color bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sipdispatch top  %s  every %v", cur.at.Format("15:04:05"), interval)
	if prev == nil {
		b.WriteString("  (rates from the next frame)")
	}
	b.WriteByte('\n')
	fmt.Fprintln(&b, cmp.Or(cur.raft, "raft -"))
	fmt.Fprintln(&b)

	secs := 0.0
	if prev != nil {
		secs = cur.at.Sub(prev.at).Seconds()
	}
	rate := func(now, before float64) string {
		if secs <= 0 {
			return "-"
		}
		return strconv.FormatFloat(max(now-before, 0)/secs, 'f', 1, 64)
	}
	state := func(flags string) string {
		w, c := stateWord(flags)
		if !color {
			return w
		}
		return ansi(c, w)
	}
	header := "STATE"
	if color {
		header = ansi(ansiPlain, header)
	}

	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SET\tURI\tDUID\t%s\tPRIO\tLOAD/MAX\tRTT avg/est/max ms\tSEL/s\n", header)
	for _, set := range cur.sets {
		for _, d := range set.dests {
			maxload := "-"
			if d.maxload > 0 {
				maxload = strconv.Itoa(d.maxload)
			}
			k := topKey{set.id, d.uri}
			var before float64
			if prev != nil {
				before = prev.selected[k]
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d/%s\t%s\t%s\n", set.id, d.uri, d.duid, state(d.flags),
				d.priority, d.load, maxload, d.rtt, rate(cur.selected[k], before))
		}
	}
	tw.Flush()
	for _, set := range cur.sets {
		fmt.Fprintf(&b, "set %d: %d destinations, %d calls in progress\n", set.id, len(set.dests), set.calls)
	}
	fmt.Fprintln(&b)

	// Requests by method and by route, replies by class: per second.
	sum := func(m map[[2]string]float64, i int) map[string]float64 {
		out := map[string]float64{}
		for k, v := range m {
			out[k[i]] += v
		}
		return out
	}
	var pm, pr map[[2]string]float64
	var pc map[string]float64
	if prev != nil {
		pm, pr, pc = prev.requests, prev.requests, prev.replies
	}
	writeRates(&b, "requests/s by method", sum(cur.requests, 0), sum(pm, 0), rate, "")
	writeRates(&b, "requests/s by route ", sum(cur.requests, 1), sum(pr, 1), rate, "(none)")
	writeRates(&b, "replies/s by class  ", cur.replies, pc, rate, "")
	return b.String()
}

// writeRates writes one line: the total, then each key's rate in key order.
func writeRates(b *strings.Builder, title string, cur, prev map[string]float64, rate func(now, before float64) string, empty string) {
	var total, totalBefore float64
	keys := make([]string, 0, len(cur))
	for k, v := range cur {
		keys = append(keys, k)
		total += v
		totalBefore += prev[k]
	}
	slices.Sort(keys)
	fmt.Fprintf(b, "%s  total %s", title, rate(total, totalBefore))
	for _, k := range keys {
		fmt.Fprintf(b, "  %s %s", cmp.Or(k, empty, `""`), rate(cur[k], prev[k]))
	}
	b.WriteByte('\n')
}
