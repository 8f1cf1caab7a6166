package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The alerting rules and the dashboard shipped under docs/deploy
// (docs/operations.md, "Alerts and dashboards").
const (
	rulesDir   = "../docs/deploy/prometheus"
	rulesFile  = "sipdispatch-rules.yml"
	rulesTests = "sipdispatch-rules.test.yml"
	dashboard  = "../docs/deploy/grafana/sipdispatch.json"
)

// TestDeployRulesAndDashboard checks docs/deploy against promtool and a real
// node: the rules load (promtool check rules) and their unit tests pass
// (promtool test rules), with every alert tested both firing and not; a
// running node's /metrics passes promtool check metrics; every metric name
// the rules and the dashboard query is one the node exports (or a recording
// rule); every dashboard query parses as PromQL; and the dashboard has the
// structure Grafana's current schema imports.
func TestDeployRulesAndDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("needs promtool and SIPp")
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is not installed (.ci/setup installs the prometheus package)")
	}
	promtool(t, rulesDir, nil, "check", "rules", rulesFile)
	promtool(t, rulesDir, nil, "test", "rules", rulesTests)

	var rules struct {
		Groups []struct {
			Rules []struct{ Record, Alert, Expr string }
		}
	}
	readYAML(t, filepath.Join(rulesDir, rulesFile), &rules)
	recorded := map[string]bool{}
	var alerts []string
	ruleExprs := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
				ruleExprs["record "+r.Record] = r.Expr
			} else {
				alerts = append(alerts, r.Alert)
				ruleExprs["alert "+r.Alert] = r.Expr
			}
		}
	}
	checkAlertTests(t, alerts)

	exported := scrapeNode(t)
	known := func(name string) bool { return exported[name] || recorded[name] }
	for what, expr := range ruleExprs {
		for _, name := range metricNames(expr) {
			if !known(name) && name != "up" {
				t.Errorf("rules: %s queries %s, which no node exports", what, name)
			}
		}
	}

	exprs := checkDashboard(t)
	for what, expr := range exprs {
		for _, name := range metricNames(expr) {
			if !known(name) {
				t.Errorf("dashboard: %s queries %s, which neither a node nor a recording rule provides", what, name)
			}
		}
	}
	checkPromQL(t, exprs)
}

// promtool runs promtool in dir, with stdin if given, and fails the test on
// a non-zero exit or, for check metrics, on any lint finding.
func promtool(t *testing.T, dir string, stdin []byte, args ...string) {
	t.Helper()
	cmd := exec.Command("promtool", args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if stdin != nil && len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool %s reports:\n%s", strings.Join(args, " "), out)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// checkAlertTests: the unit tests hold, for every alert, an evaluation
// where it fires and one where it does not.
func checkAlertTests(t *testing.T, alerts []string) {
	t.Helper()
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string
				ExpAlerts []any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	readYAML(t, filepath.Join(rulesDir, rulesTests), &tests)
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] || !silent[a] {
			t.Errorf("%s: alert %s tested firing %v, not firing %v; want both", rulesTests, a, fires[a], silent[a])
		}
	}
}

// scrapeNode runs a node with every optional series switched on (keepalive
// latency, capture, webhook), puts a SIPp call through it and marks its
// gateway inactive (a dst-down event), then checks the scrape with promtool
// and returns the names of the series it holds.
func scrapeNode(t *testing.T) map[string]bool {
	t.Helper()
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	sink := freePort(t, ip)
	n := startNodeAt(t, ip, nodeYAML("stateful", "ds_ping_interval: 1\nds_ping_latency_stats: 1", `- name: all
  dispatch: {set: 1, alg: 4}`)+fmt.Sprintf("capture: {hep: \"udp:%s:%d\"}\nevents: {webhook_url: \"http://%s:%d/\"}\n", ip, sink, ip, sink),
		listFile(1, gw))
	if code, out := sipp(t, 30*time.Second, callerArgs(n, 1, 1, 0)...); code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	rpc(t, n, nil, "dispatcher.set_state", "i", 1, gw.URI())
	var body []byte
	waitFor(t, "a keepalive RTT and the dst-down event on /metrics", 15*time.Second, func() bool {
		resp, err := http.Get("http://" + n.APIAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return bytes.Contains(body, []byte("sipdispatch_probe_rtt_seconds{")) &&
			bytes.Contains(body, []byte(`sipdispatch_destination_events_total{event="dst-down"`))
	})
	promtool(t, ".", body, "check", "metrics")
	names := map[string]bool{}
	for _, l := range strings.Split(string(body), "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

var (
	quoted     = regexp.MustCompile(`"(\\.|[^"\\])*"`)
	metricLike = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// metricNames returns the metric names in a PromQL expression: the
// identifiers that name sipdispatch series or recording rules, and `up`.
func metricNames(expr string) []string {
	var names []string
	for _, id := range metricLike.FindAllString(quoted.ReplaceAllString(expr, `""`), -1) {
		if strings.Contains(id, "sipdispatch_") || id == "up" {
			names = append(names, id)
		}
	}
	return names
}

type gridPos struct{ X, Y, W, H int }

type grafanaPanel struct {
	ID         *int            `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	GridPos    *gridPos        `json:"gridPos"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

// checkDashboard validates the dashboard's structure and returns its
// queries by panel: schemaVersion 39 or later; the data source as the
// import input DS_PROMETHEUS, used by every panel, query and variable;
// unique panel ids; every panel with a type and a grid position inside
// the 24-column grid, not overlapping another; every panel but rows with
// queries, each with a refId unique in its panel and an expression.
func checkDashboard(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int    `json:"schemaVersion"`
		UID           string `json:"uid"`
		Title         string `json:"title"`
		Inputs        []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Datasource json.RawMessage `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q: want >= 39 and both set", d.SchemaVersion, d.UID, d.Title)
	}
	if !slices.ContainsFunc(d.Inputs, func(i struct{ Name, Type, PluginID string }) bool {
		return i.Name == "DS_PROMETHEUS" && i.Type == "datasource" && i.PluginID == "prometheus"
	}) {
		t.Errorf("__inputs %+v lacks the DS_PROMETHEUS prometheus data source", d.Inputs)
	}
	usesInput := func(raw json.RawMessage) bool {
		var ds struct{ Type, UID string }
		return json.Unmarshal(raw, &ds) == nil && ds.Type == "prometheus" && ds.UID == "${DS_PROMETHEUS}"
	}
	for _, v := range d.Templating.List {
		if !usesInput(v.Datasource) {
			t.Errorf("variable %s: data source %s, want ${DS_PROMETHEUS}", v.Name, v.Datasource)
		}
	}
	var all []grafanaPanel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	if len(all) == 0 {
		t.Fatal("dashboard has no panels")
	}
	ids := map[int]bool{}
	exprs := map[string]string{}
	var placed []grafanaPanel
	for _, p := range all {
		name := fmt.Sprintf("panel %q", p.Title)
		if p.ID == nil || ids[*p.ID] {
			t.Errorf("%s: id missing or not unique", name)
		} else {
			ids[*p.ID] = true
		}
		if p.Type == "" || p.Title == "" {
			t.Errorf("%s: type %q: want a type and a title", name, p.Type)
		}
		g := p.GridPos
		if g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", name, g)
			continue
		}
		for _, q := range placed {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("%s overlaps panel %q", name, q.Title)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			continue
		}
		if !usesInput(p.Datasource) {
			t.Errorf("%s: data source %s, want ${DS_PROMETHEUS}", name, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", name)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] || strings.TrimSpace(q.Expr) == "" || !usesInput(q.Datasource) {
				t.Errorf("%s: query %q (refId %q, data source %s): want a unique refId, an expression and ${DS_PROMETHEUS}", name, q.Expr, q.RefID, q.Datasource)
			}
			refs[q.RefID] = true
			exprs[name+" "+q.RefID] = q.Expr
		}
	}
	return exprs
}

// checkPromQL has promtool parse every dashboard query, as recording rules
// with Grafana's variables replaced by values of their kind.
func checkPromQL(t *testing.T, exprs map[string]string) {
	t.Helper()
	vars := strings.NewReplacer("$__rate_interval", "5m", "$job", "sipdispatch", "$instance", ".*", "$set", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range exprs {
			if !yield(k) {
				return
			}
		}
	})
	for i, k := range keys {
		q, _ := json.Marshal(vars.Replace(exprs[k])) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-rules.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, nil, "check", "rules", "dashboard-rules.yml")
}
