package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/webhook"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip"
	"github.com/sipdispatch/sipdispatch/sip/capture"
)

// fileConfig is the whole configuration file (docs/configuration.md). Every field has a
// default (defaultConfig); docs/configuration.md describes each key.
type fileConfig struct {
	Node       nodeConfig        `yaml:"node"`
	Listen     []string          `yaml:"listen"`    // PROTO:HOST[:PORT], PROTO udp, tcp or tls
	Advertise  string            `yaml:"advertise"` // host[:port] for Record-Route/Via; "" = the listen address
	Proxy      proxyConfig       `yaml:"proxy"`
	API        apiConfig         `yaml:"api"`
	Log        logConfig         `yaml:"log"`
	Dispatcher dispatcherConfig  `yaml:"dispatcher"`
	Routes     []sip.RouteConfig `yaml:"routes"`
	Cluster    clusterConfig     `yaml:"cluster"`
	Events     webhook.Config    `yaml:"events"`
	Capture    capture.Config    `yaml:"capture"`

	// path is the file the values came from; "" for built-in defaults.
	path string
	// lines maps a key path ("dispatcher.ds_ping_interval", "routes[1].dispatch.alg")
	// to its line in path, so errors point at the line to fix.
	lines map[string]int
	// warnings are notices about accepted keys that have no effect.
	warnings []string
}

type nodeConfig struct {
	Name    string       `yaml:"name"`     // unique in a cluster
	DataDir string       `yaml:"data_dir"` // raft log, snapshots; relative to the config file
	Procs   procsSetting `yaml:"procs"`    // auto (the procs governor) or a fixed GOMAXPROCS
}

// maxProcs is the largest node.procs a file may fix.
const maxProcs = 1024

// procsSetting is node.procs: "auto" (the zero value: the procs governor
// chooses GOMAXPROCS) or a number of Ps fixed at start. In YAML it is the
// word auto or an integer, as sip.FromSet is a set id or any.
type procsSetting struct {
	n     int  // the fixed GOMAXPROCS; meaningful when fixed
	fixed bool // a number was written (so 0 is refused, not taken for auto)
}

// Fixed returns the GOMAXPROCS to set at start, or false for auto.
func (p procsSetting) Fixed() (int, bool) { return p.n, p.fixed }

// String renders p as written in YAML.
func (p procsSetting) String() string {
	if !p.fixed {
		return "auto"
	}
	return strconv.Itoa(p.n)
}

// MarshalYAML writes auto as the word, a fixed count as an integer.
func (p procsSetting) MarshalYAML() (any, error) {
	if !p.fixed {
		return "auto", nil
	}
	return p.n, nil
}

// UnmarshalYAML accepts auto or an integer; Validate checks the range.
func (p *procsSetting) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if strings.EqualFold(n.Value, "auto") {
			*p = procsSetting{}
			return nil
		}
		var v int
		if n.ShortTag() == "!!int" && n.Decode(&v) == nil {
			*p = procsSetting{n: v, fixed: true}
			return nil
		}
	}
	what := fmt.Sprintf("node.procs %q", n.Value)
	if n.Kind != yaml.ScalarNode {
		what = "node.procs"
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s: want auto or a number of Ps 1..%d", n.Line, what, maxProcs)}}
}

type proxyConfig struct {
	Mode        string        `yaml:"mode"`         // stateful | stateless
	RecordRoute bool          `yaml:"record_route"` // add Record-Route with the advertise address
	MaxForwards int           `yaml:"max_forwards"` // set on requests without Max-Forwards
	FrTimer     time.Duration `yaml:"fr_timer"`     // final reply timeout (tm fr_timer)
	FrInvTimer  time.Duration `yaml:"fr_inv_timer"` // INVITE final reply timeout after a provisional (tm fr_inv_timer)
	WtTimer     time.Duration `yaml:"wt_timer"`     // how long a finished UDP transaction stays (tm wt_timer); 0 = RFC 3261's 32 s
	TLSCert     string        `yaml:"tls_cert"`     // PEM certificate for tls: listeners
	TLSKey      string        `yaml:"tls_key"`      // PEM key for tls: listeners
	UDPReaders  int           `yaml:"udp_readers"`  // stateless: sockets per UDP address (SO_REUSEPORT); 0 = one per CPU
}

type apiConfig struct {
	Listen    string `yaml:"listen"`     // HOST:PORT of the management API
	TokenFile string `yaml:"token_file"` // file holding the bearer token; "" = loopback callers only
}

type logConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// dispatcherConfig is dispatch.Config with Kamailio's modparam names plus the
// other Kamailio keys a migrated file may carry: those are kept in other and
// checked by name (checkOther), so an unknown key is still an error.
type dispatcherConfig struct {
	dispatch.Config `yaml:",inline"`
	other           []yamlPair
}

type yamlPair struct{ key, value *yaml.Node }

// UnmarshalYAML decodes the keys of dispatch.Config and sets the rest aside.
func (d *dispatcherConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: dispatcher must be a mapping of keys", n.Line)}}
	}
	known := &yaml.Node{Kind: yaml.MappingNode, Tag: n.Tag, Line: n.Line, Column: n.Column}
	d.other = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if dispatcherKeys[k.Value] {
			known.Content = append(known.Content, k, v)
		} else {
			d.other = append(d.other, yamlPair{k, v})
		}
	}
	return known.Decode(&d.Config)
}

// dispatcherKeys are the yaml names of dispatch.Config's fields.
var dispatcherKeys = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[dispatch.Config]()
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" {
			m[name] = true
		}
	}
	return m
}()

// thresholdTypo is Kamailio's old spelling of ds_probing_threshold, still
// accepted by Kamailio's documentation examples.
const thresholdTypo = "ds_probing_threshhold"

// pingTimeoutAlias is Kamailio's other name of ds_ping_fr_timer (both are
// exported by the module for the same variable).
const pingTimeoutAlias = "ds_ping_fr_timeout"

// ignoredParams are Kamailio modparams that configure something sipdispatch
// does not have; each is accepted with one warning saying why.
var ignoredParams = map[string]string{
	"ds_timer_mode":       "selects which Kamailio timer process runs keepalives and call-load expiry; sipdispatch runs them on goroutines of their own",
	"event_callback":      "names a KEMI script function for dst-up/dst-down; sipdispatch has no script: use events.webhook_url (or the metrics)",
	"event_callback_mode": "says when event_route/KEMI callbacks run; sipdispatch reports every state change as a dst-up/dst-down event (events.webhook_url)",
}

// noopParams name Kamailio script variables (AVPs, XAVPs, PVs) that receive
// the selection. sipdispatch exposes the same data as the $ds.* template
// variables, so these keys are accepted and ignored.
var noopParams = map[string]bool{
	"dst_avp": true, "grp_avp": true, "cnt_avp": true, "dstid_avp": true, "attrs_avp": true,
	"sock_avp": true, "setid_pvar": true, "setid_pvname": true, "attrs_pvname": true,
	"xavp_dst": true, "xavp_dst_mode": true, "xavp_ctx": true, "xavp_ctx_mode": true,
	"ds_attrs_none": true,
}

type clusterConfig struct {
	Enabled         bool          `yaml:"enabled"`
	Gossip          gossipConfig  `yaml:"gossip"`
	Raft            raftConfig    `yaml:"raft"`
	LoadReplication string        `yaml:"load_replication"` // sync | async
	DeadNodeReap    time.Duration `yaml:"dead_node_reap"`   // a failed node is removed after this long
	// LeaveOnTerminate makes SIGTERM/SIGINT leave the cluster for good
	// first. Off by default: a restart (an upgrade) must not shrink the
	// raft configuration, as with Consul servers.
	LeaveOnTerminate bool `yaml:"leave_on_terminate"`
}

type gossipConfig struct {
	Bind           string   `yaml:"bind"`             // HOST:PORT for memberlist
	Advertise      string   `yaml:"advertise"`        // HOST:PORT other nodes reach; "" = bind
	Join           []string `yaml:"join"`             // HOST[:PORT] of existing members
	EncryptKeyFile string   `yaml:"encrypt_key_file"` // base64 AES key; "" = plain gossip
}

type raftConfig struct {
	Bind            string    `yaml:"bind"`             // HOST:PORT for raft
	Advertise       string    `yaml:"advertise"`        // HOST:PORT other nodes reach; "" = bind
	BootstrapExpect int       `yaml:"bootstrap_expect"` // nodes that form the first cluster
	TLS             tlsConfig `yaml:"tls"`
	// Log compaction: every SnapshotInterval raft snapshots the state if more
	// than SnapshotThreshold entries were appended since the last snapshot,
	// and keeps TrailingLogs entries behind it; a follower further behind
	// catches up by snapshot transfer (InstallSnapshot).
	SnapshotThreshold uint64        `yaml:"snapshot_threshold"`
	SnapshotInterval  time.Duration `yaml:"snapshot_interval"`
	TrailingLogs      uint64        `yaml:"trailing_logs"`
	// CommitTimeout is how long an idle leader waits before telling the
	// followers the new commit index: a write forwarded by a follower (an
	// algorithm-10 INVITE through it) waits about this long for it.
	CommitTimeout time.Duration `yaml:"commit_timeout"`
}

type tlsConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// defaultConfig returns the defaults of docs/configuration.md: `serve` without a file runs one
// node on UDP+TCP 127.0.0.1:5060 with ./dispatcher.list and ./data.
func defaultConfig() fileConfig {
	return fileConfig{
		Node:   nodeConfig{Name: "n1", DataDir: "./data"},
		Listen: []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"},
		Proxy: proxyConfig{
			Mode: "stateful", RecordRoute: true, MaxForwards: 70,
			FrTimer: 5 * time.Second, FrInvTimer: 120 * time.Second,
		},
		API:        apiConfig{Listen: "127.0.0.1:9060"},
		Log:        logConfig{Level: "info", Format: "text"},
		Dispatcher: dispatcherConfig{Config: dispatch.DefaultConfig()},
		Cluster: clusterConfig{
			Gossip: gossipConfig{Bind: "0.0.0.0:7946"},
			Raft: raftConfig{Bind: "0.0.0.0:7947", BootstrapExpect: 1,
				SnapshotThreshold: cluster.DefaultConfig().SnapshotThreshold,
				SnapshotInterval:  cluster.DefaultConfig().SnapshotInterval,
				TrailingLogs:      cluster.DefaultConfig().TrailingLogs,
				CommitTimeout:     cluster.DefaultConfig().CommitTimeout},
			LoadReplication: "sync",
			DeadNodeReap:    24 * time.Hour,
		},
		Events:  webhook.DefaultConfig(),
		Capture: capture.DefaultConfig(),
	}
}

// loadConfig reads path over the defaults. Unknown keys and values of the
// wrong type are errors naming the file, line and key; relative paths in the
// file are taken relative to the file's folder. It does not Validate.
func loadConfig(path string) (fileConfig, error) {
	c := defaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c.path = path
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := cleanYAMLError(err).Error()
		if m := lineRe.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return c, fmt.Errorf("%s%s", c.at(line), m[2])
		}
		return c, fmt.Errorf("%s: %s", path, msg)
	}
	c.lines = map[string]int{}
	if len(doc.Content) > 0 {
		recordLines(doc.Content[0], "", c.lines)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, c.yamlErrors(err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return c, fmt.Errorf("%sonly one YAML document is allowed", c.at(more.Line))
	}
	if err := c.Dispatcher.checkOther(&c); err != nil {
		return c, err
	}
	c.resolvePaths(filepath.Dir(path))
	return c, nil
}

// checkOther applies the old threshold spelling and turns the no-op keys into
// warnings; any other key is unknown.
func (d *dispatcherConfig) checkOther(c *fileConfig) error {
	var errs []error
	for _, p := range d.other {
		k := p.key.Value
		at := c.at(p.key.Line)
		switch {
		case k == thresholdTypo:
			if _, both := c.lines["dispatcher.ds_probing_threshold"]; both {
				errs = append(errs, fmt.Errorf("%sdispatcher.%s: ds_probing_threshold is set too; keep one", at, k))
				continue
			}
			if err := p.value.Decode(&d.ProbingThreshold); err != nil {
				errs = append(errs, fmt.Errorf("%sdispatcher.%s: %v", at, k, cleanYAMLError(err)))
			}
			c.lines["dispatcher.ds_probing_threshold"] = p.key.Line
		case k == pingTimeoutAlias:
			if _, both := c.lines["dispatcher.ds_ping_fr_timer"]; both {
				errs = append(errs, fmt.Errorf("%sdispatcher.%s: ds_ping_fr_timer is set too; keep one", at, k))
				continue
			}
			if err := p.value.Decode(&d.PingFRTimer); err != nil {
				errs = append(errs, fmt.Errorf("%sdispatcher.%s: %v", at, k, cleanYAMLError(err)))
			}
			c.lines["dispatcher.ds_ping_fr_timer"] = p.key.Line
		case ignoredParams[k] != "":
			var v any
			if err := p.value.Decode(&v); err != nil || p.value.Kind != yaml.ScalarNode {
				errs = append(errs, fmt.Errorf("%sdispatcher.%s: want a number or a string", at, k))
				continue
			}
			c.warnings = append(c.warnings, fmt.Sprintf("%sdispatcher.%s: ignored: %s", at, k, ignoredParams[k]))
		case noopParams[k]:
			c.warnings = append(c.warnings, fmt.Sprintf("%sdispatcher.%s: Kamailio script variable; it has no effect here (routes use $ds.set, $ds.uri, $ds.duid, $ds.attrs, $ds.count)", at, k))
		default:
			errs = append(errs, fmt.Errorf("%sunknown key %q", at, "dispatcher."+k))
		}
	}
	if d.ForceDst != 0 {
		// Kamailio's force_dst decides whether a selection may overwrite a
		// destination the script set earlier; sipdispatch has no such step.
		c.warnings = append(c.warnings, fmt.Sprintf("%sdispatcher.force_dst: has no effect here: the selected gateway is always the destination (nothing sets one before selection)", c.at(c.lines["dispatcher.force_dst"])))
	}
	return errors.Join(errs...)
}

// at is the "file:line: " prefix for a line of the config file, or "".
func (c *fileConfig) at(line int) string {
	if c.path == "" || line == 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d: ", c.path, line)
}

// recordLines maps each key path under n to the line of its key.
func recordLines(n *yaml.Node, prefix string, lines map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if prefix != "" {
				p = prefix + "." + p
			}
			lines[p] = n.Content[i].Line
			recordLines(n.Content[i+1], p, lines)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			lines[p] = item.Line
			recordLines(item, p, lines)
		}
	}
}

var (
	unknownFieldRe = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)
	lineRe         = regexp.MustCompile(`^line (\d+): (.*)$`)
	goTypeRe       = regexp.MustCompile(`\b(main|sip|dispatch)\.[A-Za-z]+`)
)

// yamlErrors rewrites yaml.v3's errors as file:line: key: reason, one per line.
func (c *fileConfig) yamlErrors(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", c.path, cleanYAMLError(err))
	}
	var errs []error
	for _, e := range te.Errors {
		if m := unknownFieldRe.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, fmt.Errorf("%sunknown key %q", c.at(line), c.pathAt(line, m[2])))
			continue
		}
		if m := lineRe.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			// Go type names mean nothing to the reader; all of ours are mappings.
			msg := goTypeRe.ReplaceAllString(m[2], "a mapping of keys")
			if strings.Contains(msg, "time.Duration") {
				msg += ` (durations are written with a unit: "5s", "1500ms", "2m")`
			}
			errs = append(errs, fmt.Errorf("%s%s", c.at(line), msg))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s", c.path, e))
	}
	return errors.Join(errs...)
}

// pathAt finds the full path of key on line (the shortest if several match).
func (c *fileConfig) pathAt(line int, key string) string {
	best := ""
	for p, l := range c.lines {
		if l != line || (p != key && !strings.HasSuffix(p, "."+key)) {
			continue
		}
		if best == "" || len(p) < len(best) || (len(p) == len(best) && p < best) {
			best = p
		}
	}
	if best == "" {
		return key
	}
	return best
}

// cleanYAMLError drops yaml.v3's "yaml: " prefix; the caller adds the file.
func cleanYAMLError(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// resolvePaths makes relative file names of the config file relative to dir,
// so the file works from any working directory.
func (c *fileConfig) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.Node.DataDir, &c.Dispatcher.ListFile, &c.API.TokenFile,
		&c.Proxy.TLSCert, &c.Proxy.TLSKey, &c.Cluster.Gossip.EncryptKeyFile,
		&c.Cluster.Raft.TLS.Cert, &c.Cluster.Raft.TLS.Key, &c.Cluster.Raft.TLS.CA,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if f, ok := strings.CutPrefix(c.Dispatcher.DBURL, "sqlite://"); ok && f != "" && !filepath.IsAbs(f) {
		c.Dispatcher.DBURL = "sqlite://" + filepath.Join(dir, f)
	}
}

// Warnings returns notices about keys that were accepted but have no effect.
func (c *fileConfig) Warnings() []string { return c.warnings }

// Validate reports every bad field, each as "file:line: key: value: reason"
// when the value came from the file.
func (c *fileConfig) Validate() error {
	var errs []error
	bad := func(path string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s%s: %v: %s", c.lineOf(path), path, v, why))
	}
	q := strconv.Quote
	// node.name and node.data_dir are the cluster package's (nodeConfig below).
	if n, fixed := c.Node.Procs.Fixed(); fixed && (n < 1 || n > maxProcs) {
		bad("node.procs", n, fmt.Sprintf("must be auto or 1..%d", maxProcs))
	}
	if err := api.CheckListen(c.API.Listen); err != nil {
		bad("api.listen", q(c.API.Listen), err.Error())
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", q(c.Log.Level), "must be debug, info, warn or error")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", q(c.Log.Format), "must be text or json")
	}
	reported := map[string]bool{}
	keyed := func(err error) { errs = append(errs, c.keyed(err, reported)...) }
	keyed(c.Dispatcher.Validate())
	// The sip package owns listen, advertise and the proxy keys.
	// cluster.load_replication is checked below, under its own key.
	reported["load_replication"] = true
	sc := c.sipConfig()
	keyed(sc.Validate())
	// The source package owns the database keys (db_url, table and column
	// names); dispatch.Config.Validate above owns list_file/db_url presence
	// and ds_load_mode.
	keyed(errors.Join(source.Validate(&c.Dispatcher.Config)...))
	if _, err := sip.NewRouter(c.Routes, 0); err != nil {
		for _, e := range unjoin(err) {
			var re *sip.RouteError
			path := "routes"
			if errors.As(e, &re) {
				path = fmt.Sprintf("routes[%d].%s", re.Index, re.Field)
			}
			errs = append(errs, fmt.Errorf("%s%w", c.lineOf(path), e))
		}
	}
	errs = append(errs, c.checkRouteNeeds()...)
	// The cluster package owns the node and cluster keys; the mapping adds
	// the few that only the file can get wrong (nodeConfig). The gossip key
	// and TLS files are read in Preflight.
	_, err := c.nodeConfig(false)
	keyed(err)
	if c.Cluster.LoadReplication == "" {
		bad("cluster.load_replication", `""`, "must be sync or async")
	} else if err := (&actors.Options{LoadReplication: c.Cluster.LoadReplication}).Validate(); err != nil {
		bad("cluster.load_replication", q(c.Cluster.LoadReplication), err.Error())
	}
	keyed(c.Events.Validate())
	keyed(c.Capture.Validate())
	return errors.Join(errs...)
}

// keyed prefixes each error of a package's Validate, which names its key
// first ("dispatcher.KEY: ...", "listen[1]: ...", "cluster.raft.bind: ..."),
// with the file:line of that key; a key already in reported is not
// reported again.
func (c *fileConfig) keyed(err error, reported map[string]bool) []error {
	if err == nil {
		return nil
	}
	var errs []error
	for _, e := range unjoin(err) {
		path, _, _ := strings.Cut(e.Error(), ":")
		if reported[path] {
			continue
		}
		reported[path] = true
		errs = append(errs, fmt.Errorf("%s%w", c.lineOf(path), e))
	}
	return errs
}

// Preflight is Validate, then, if that passed, what serve does with the
// config before it touches node.data_dir: the node config it gets, with the
// gossip key and raft TLS files read, and the cluster package's Validate
// over it. check and serve both run it, so serve does not stop on a config
// that check passed.
func (c *fileConfig) Preflight() error {
	if err := c.Validate(); err != nil {
		return err
	}
	_, err := c.nodeConfig(true)
	return errors.Join(c.keyed(err, map[string]bool{})...)
}

// checkRouteNeeds reports algorithms whose dispatcher parameter is missing;
// Kamailio fails those selections at run time, here the file is refused.
func (c *fileConfig) checkRouteNeeds() []error {
	var errs []error
	for i, r := range c.Routes {
		if r.Dispatch == nil {
			continue
		}
		need := ""
		switch dispatch.Algorithm(r.Dispatch.Alg) {
		case dispatch.AlgHashPVar:
			if c.Dispatcher.HashPVar == "" {
				need = "algorithm 7 hashes dispatcher.hash_pvar, which is empty"
			}
		case dispatch.AlgCallLoad:
			if c.Dispatcher.HashSize <= 0 {
				need = "algorithm 10 needs dispatcher.ds_hash_size > 0 (the call-load table)"
			}
		case dispatch.AlgLatency:
			if c.Dispatcher.PingLatencyStats != 1 {
				need = "algorithm 13 needs dispatcher.ds_ping_latency_stats: 1"
			}
		}
		if need != "" {
			path := fmt.Sprintf("routes[%d].dispatch.alg", i)
			errs = append(errs, fmt.Errorf("%sroutes[%d] %q: dispatch.alg: %d: %s", c.lineOf(path), i, r.Name, r.Dispatch.Alg, need))
		}
	}
	return errs
}

// lineOf is the "file:line: " prefix of the nearest key path that came from
// the file ("routes[1].dispatch.alg", else "routes[1].dispatch", ...).
func (c *fileConfig) lineOf(path string) string {
	for p := path; p != ""; {
		if l, ok := c.lines[p]; ok {
			return c.at(l)
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return ""
}

// unjoin lists the errors of an errors.Join (or just err).
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// router compiles the routes for the loaded sets; with no routes, the default
// route sends everything to the lowest set id (docs/configuration.md, "routes").
func (c *fileConfig) router(sets []dispatch.Set) (*sip.Router, error) {
	def := 0
	for i, s := range sets {
		if i == 0 || s.ID < def {
			def = s.ID
		}
	}
	return sip.NewRouter(c.Routes, def)
}

// serveFlags are the `serve` flags that override the file.
type serveFlags struct {
	config                                              string
	listen, join                                        stringList
	advertise, list, dataDir, api, mode, logLevel, name string
}

// stringList is a repeatable flag; each use may also hold a comma list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// registerServeFlags declares the override flags on fs.
func registerServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{}
	fs.StringVar(&f.config, "config", "", "configuration file (YAML); none = built-in defaults")
	fs.Var(&f.listen, "listen", "PROTO:HOST:PORT to listen on, repeatable or comma-separated (replaces listen)")
	fs.StringVar(&f.advertise, "advertise", "", "host[:port] for Record-Route/Via (advertise)")
	fs.StringVar(&f.list, "list", "", "destination list file (dispatcher.list_file)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory (node.data_dir)")
	fs.StringVar(&f.api, "api", "", "management API HOST:PORT (api.listen)")
	fs.StringVar(&f.mode, "mode", "", "stateful or stateless (proxy.mode)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
	fs.Var(&f.join, "join", "gossip HOST:PORT to join, repeatable (cluster.gossip.join; enables the cluster)")
	fs.StringVar(&f.name, "name", "", "node name (node.name)")
	return f
}

// applyServeFlags overrides c with the flags actually given on the command
// line (fs.Visit), so a flag's default never hides a value from the file.
// Paths given as flags stay relative to the working directory.
func applyServeFlags(fs *flag.FlagSet, f *serveFlags, c *fileConfig) {
	fs.Visit(func(fl *flag.Flag) {
		var path string
		switch fl.Name {
		case "listen":
			c.Listen, path = append([]string(nil), f.listen...), "listen"
		case "advertise":
			c.Advertise, path = f.advertise, "advertise"
		case "list":
			c.Dispatcher.ListFile, path = f.list, "dispatcher.list_file"
		case "data-dir":
			c.Node.DataDir, path = f.dataDir, "node.data_dir"
		case "api":
			c.API.Listen, path = f.api, "api.listen"
		case "mode":
			c.Proxy.Mode, path = f.mode, "proxy.mode"
		case "log-level":
			c.Log.Level, path = f.logLevel, "log.level"
		case "join":
			c.Cluster.Gossip.Join, path = append([]string(nil), f.join...), "cluster.gossip.join"
			c.Cluster.Enabled = true
		case "name":
			c.Node.Name, path = f.name, "node.name"
		default:
			return
		}
		// An error about this value must not point at the file's line.
		for p := range c.lines {
			if p == path || strings.HasPrefix(p, path+"[") || strings.HasPrefix(p, path+".") {
				delete(c.lines, p)
			}
		}
	})
}

// configFromFlags builds the serve configuration: the file named by -config
// (or the defaults), then the flags, then Validate.
func configFromFlags(fs *flag.FlagSet, f *serveFlags) (fileConfig, error) {
	c := defaultConfig()
	if f.config != "" {
		var err error
		if c, err = loadConfig(f.config); err != nil {
			return c, err
		}
	}
	applyServeFlags(fs, f, &c)
	return c, c.Preflight()
}

// sourceName names the destination source in messages.
func (c *fileConfig) sourceName() string { return source.Name(&c.Dispatcher.Config) }
