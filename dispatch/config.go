package dispatch

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Config holds the dispatcher parameters with Kamailio's modparam names (the
// yaml tags), so a Kamailio configuration migrates by copying values. Defaults
// follow the seed document (Kamailio 3.x) where newer Kamailio differs; see
// DefaultConfig.
type Config struct {
	// ListFile is the Kamailio-format destination list. Default "dispatcher.list".
	ListFile string `yaml:"list_file"`
	// DBURL selects a database source instead of ListFile; "" = list file.
	DBURL string `yaml:"db_url"`
	// TableName and the *Col fields name the database table and its columns.
	TableName      string `yaml:"table_name"`
	SetIDCol       string `yaml:"setid_col"`
	DestinationCol string `yaml:"destination_col"`
	FlagsCol       string `yaml:"flags_col"`
	PriorityCol    string `yaml:"priority_col"`
	AttrsCol       string `yaml:"attrs_col"`

	// ForceDst: 1 lets a selection overwrite a destination already set. Default 0.
	ForceDst int `yaml:"force_dst"`
	// Flags: bit 1 hashes only the URI user (algorithms 1-3); bit 2 builds the
	// failover list. Default 0.
	Flags int `yaml:"flags"`
	// UseDefault: 1 keeps the last destination of each set as a last resort,
	// outside the hash range. Default 0.
	UseDefault int `yaml:"use_default"`
	// HashPVar is the template hashed by algorithm 7, e.g. "$fU@$ci". Default "".
	HashPVar string `yaml:"hash_pvar"`
	// HashPVarVars gives the $avp(...) and $var(...) variables hash_pvar
	// reads their value: a template each (a header, another variable,
	// text), keyed by the variable as written, e.g. {"$avp(i:273)":
	// "$hdr(X-Account)"}. A Kamailio script assigns them; sipdispatch has no
	// script. Default none.
	HashPVarVars map[string]string `yaml:"hash_pvar_vars,omitempty"`

	// PingMethod is the keepalive method. Default "OPTIONS".
	PingMethod string `yaml:"ds_ping_method"`
	// PingFrom is the keepalive From URI. Default "sip:dispatcher@localhost".
	PingFrom string `yaml:"ds_ping_from"`
	// PingInterval is the keepalive period in seconds; 0 = no probing. Default 0.
	PingInterval int `yaml:"ds_ping_interval"`
	// ProbingThreshold is the number of failures that turn a destination
	// inactive (trying in between). Default 3.
	ProbingThreshold int `yaml:"ds_probing_threshold"`
	// InactiveThreshold is the number of successful probes that turn an
	// inactive destination active again. Default 1.
	InactiveThreshold int `yaml:"ds_inactive_threshold"`
	// PingReplyCodes lists extra keepalive replies taken as success, e.g.
	// "class=2;code=403;code=488"; "" = only 200.
	PingReplyCodes string `yaml:"ds_ping_reply_codes"`
	// ProbingMode (Kamailio's ds_probing_mode): 0 probe only destinations
	// with the probing flag, which any reply clears; 1 probe all and set the
	// flag; 2 probe only destinations both inactive and probing; 3 probe only
	// destinations with the probing flag, keeping it whatever the reply.
	ProbingMode int `yaml:"ds_probing_mode"`
	// PingLatencyStats: 1 keeps latency statistics from keepalives (needed by
	// algorithm 13). Default 0.
	PingLatencyStats int `yaml:"ds_ping_latency_stats"`
	// LatencyEstimatorAlpha is the weight, in per-mille (0..1000), of each new
	// round-trip sample in the latency estimate (EWMA):
	// est = sample*alpha + est*(1-alpha), as Kamailio 6.1 computes it
	// (latency_stats_update in dispatch.c); default 100 as in Kamailio 6.1.
	// Kamailio 5.x and 6.0 weighted the old estimate instead (default 900),
	// so a value from such a config converts to 1000 minus it.
	LatencyEstimatorAlpha int `yaml:"ds_latency_estimator_alpha"`

	// PingFRTimer (ds_ping_fr_timer, also spelt ds_ping_fr_timeout) is how
	// long a keepalive waits for its final reply, in milliseconds; 0 = the
	// proxy's fr_timer. Default 0.
	PingFRTimer int `yaml:"ds_ping_fr_timer"`
	// RetainLatencyStats: 1 keeps each destination's latency statistics
	// across a reload (matched as the rest of the runtime state), 0 restarts
	// them from the source. Default 1 (docs/configuration.md says why).
	RetainLatencyStats int `yaml:"ds_retain_latency_stats"`
	// OutboundProxy is the SIP URI keepalives are sent through, unless a
	// destination has an obproxy attribute; "" = straight to the destination.
	OutboundProxy string `yaml:"outbound_proxy"`
	// DefaultSocket (proto:host:port) and DefaultSockname (a listener's
	// name) choose the listener that requests and keepalives leave from
	// when a destination names none; the name wins. "" = the first listener
	// of the destination's transport.
	DefaultSocket   string `yaml:"ds_default_socket"`
	DefaultSockname string `yaml:"ds_default_sockname"`
	// PingSocket (proto:host:port) is the listener keepalives leave from
	// when a destination has no ping_socket, sockname or socket attribute.
	PingSocket string `yaml:"ds_ping_socket"`
	// DBExtraAttrs ("aname=column;...") names extra columns of the database
	// table appended to each row's attrs as aname=value. Default "".
	DBExtraAttrs string `yaml:"ds_db_extra_attrs"`
	// ReloadDelta is the minimum number of seconds between two reloads,
	// runtime adds or removes; 0 = no limit. Default 0.
	ReloadDelta int `yaml:"reload_delta"`

	// HashSize is log2 of the call-load table's slots; > 0 enables algorithm 10.
	HashSize int `yaml:"ds_hash_size"`
	// HashExpire is the lifetime of a confirmed call-load entry, seconds. Default 7200.
	HashExpire int `yaml:"ds_hash_expire"`
	// HashInitExpire is the lifetime of an unconfirmed entry, seconds. Default 7200.
	HashInitExpire int `yaml:"ds_hash_initexpire"`
	// HashCheckInterval is how often expired entries are swept, seconds. Default 30.
	HashCheckInterval int `yaml:"ds_hash_check_interval"`

	// HashFallback is what a hash algorithm does when the hashed destination
	// cannot be selected: "next" (Kamailio: the next active entry) or "rehash"
	// (hash again over the active entries, spreading the share evenly).
	HashFallback string `yaml:"hash_fallback"`
	// LoadMode: 1 a bad list line or row stops the load; 0 skips it with a warning.
	LoadMode int `yaml:"ds_load_mode"`

	// DNSMode (ds_dns_mode) says when destinations named by a host name are
	// resolved for from_set, as bits: 1 at load and reload, 2 on each
	// from_set check (cached for the TTL), 4 at load and then every
	// DNSInterval, 8 through NAPTR/SRV (RFC 3263) instead of A/AAAA only.
	// Default 1. The proxy (sip.DestResolver) applies them.
	DNSMode int `yaml:"ds_dns_mode"`
	// DNSInterval is the period of mode 4's re-resolution, seconds. Default 600.
	DNSInterval int `yaml:"ds_dns_interval"`
	// DNSTTL, when > 0, is how long every DNS answer is kept, seconds; 0 =
	// the records' own TTL. Default 0.
	DNSTTL int `yaml:"ds_dns_ttl"`
	// DNSMatchAll: 1 lets from_set match every address a name resolves to,
	// 0 only the first. Default 0.
	DNSMatchAll int `yaml:"ds_dns_match_all"`
}

// Config.DNSMode bits (Kamailio's DS_DNS_MODE_*).
const (
	DNSModeInit   = 1 // resolve at load and reload
	DNSModeAlways = 2 // resolve when from_set checks
	DNSModeTimer  = 4 // resolve at load, then every ds_dns_interval
	DNSModeSRV    = 8 // NAPTR/SRV for from_set, not only A/AAAA
)

// Config.Flags bits.
const (
	FlagsHashUserOnly = 1 // DS_HASH_USER_ONLY
	FlagsFailover     = 2 // DS_FAILOVER_ON
)

// DefaultConfig returns the documented defaults
// (docs/configuration.md#dispatcher).
func DefaultConfig() Config {
	return Config{
		ListFile:              "dispatcher.list",
		TableName:             "dispatcher",
		SetIDCol:              "setid",
		DestinationCol:        "destination",
		FlagsCol:              "flags",
		PriorityCol:           "priority",
		AttrsCol:              "attrs",
		PingMethod:            "OPTIONS",
		PingFrom:              "sip:dispatcher@localhost",
		ProbingThreshold:      3,
		InactiveThreshold:     1,
		LatencyEstimatorAlpha: 100,
		RetainLatencyStats:    1,
		HashExpire:            7200,
		HashInitExpire:        7200,
		HashCheckInterval:     30,
		HashFallback:          "next",
		LoadMode:              1,
		DNSMode:               DNSModeInit,
		DNSInterval:           600,
	}
}

// Validate reports every invalid field, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name string, v any, why string) {
		errs = append(errs, fmt.Errorf("dispatcher.%s: %v: %s", name, v, why))
	}
	if c.ListFile == "" && c.DBURL == "" {
		bad("list_file", `""`, "one of list_file or db_url is required")
	}
	if c.Flags&^(FlagsHashUserOnly|FlagsFailover) != 0 {
		bad("flags", c.Flags, "only bits 1 and 2 are defined")
	}
	if c.UseDefault != 0 && c.UseDefault != 1 {
		bad("use_default", c.UseDefault, "must be 0 or 1")
	}
	if c.ForceDst != 0 && c.ForceDst != 1 {
		bad("force_dst", c.ForceDst, "must be 0 or 1")
	}
	for _, name := range slices.Sorted(maps.Keys(c.HashPVarVars)) {
		v := c.HashPVarVars[name]
		if !strings.HasPrefix(name, "$avp(") && !strings.HasPrefix(name, "$var(") || !strings.HasSuffix(name, ")") {
			bad("hash_pvar_vars", strconv.Quote(name), "only $avp(...) and $var(...) variables can be declared")
		} else if _, err := ParseTemplateVars(name, c.HashPVarVars); err != nil {
			bad("hash_pvar_vars", strconv.Quote(name)+": "+strconv.Quote(v), err.Error())
		}
	}
	if c.HashPVar != "" {
		if _, err := ParseTemplateVars(c.HashPVar, c.HashPVarVars); err != nil {
			bad("hash_pvar", strconv.Quote(c.HashPVar), err.Error())
		}
	}
	if strings.TrimSpace(c.PingMethod) == "" || strings.ContainsAny(c.PingMethod, " \t\r\n") {
		bad("ds_ping_method", strconv.Quote(c.PingMethod), "must be one token")
	}
	if !strings.HasPrefix(c.PingFrom, "sip:") && !strings.HasPrefix(c.PingFrom, "sips:") {
		bad("ds_ping_from", strconv.Quote(c.PingFrom), "must be a sip: or sips: URI")
	}
	if c.PingInterval < 0 {
		bad("ds_ping_interval", c.PingInterval, "must be >= 0 seconds")
	}
	if c.ProbingThreshold < 1 {
		bad("ds_probing_threshold", c.ProbingThreshold, "must be >= 1")
	}
	if c.InactiveThreshold < 1 {
		bad("ds_inactive_threshold", c.InactiveThreshold, "must be >= 1")
	}
	if _, err := ParseReplyCodes(c.PingReplyCodes); err != nil {
		bad("ds_ping_reply_codes", strconv.Quote(c.PingReplyCodes), err.Error())
	}
	if c.ProbingMode < 0 || c.ProbingMode > 3 {
		bad("ds_probing_mode", c.ProbingMode, "must be 0..3")
	}
	if c.PingLatencyStats != 0 && c.PingLatencyStats != 1 {
		bad("ds_ping_latency_stats", c.PingLatencyStats, "must be 0 or 1")
	}
	if c.LatencyEstimatorAlpha < 0 || c.LatencyEstimatorAlpha > 1000 {
		bad("ds_latency_estimator_alpha", c.LatencyEstimatorAlpha, "must be 0..1000")
	}
	if c.PingFRTimer < 0 {
		bad("ds_ping_fr_timer", c.PingFRTimer, "must be >= 0 milliseconds")
	}
	if c.RetainLatencyStats != 0 && c.RetainLatencyStats != 1 {
		bad("ds_retain_latency_stats", c.RetainLatencyStats, "must be 0 or 1")
	}
	if c.OutboundProxy != "" && !hasSIPScheme(c.OutboundProxy) {
		bad("outbound_proxy", strconv.Quote(c.OutboundProxy), "must be a sip: or sips: URI")
	}
	for _, s := range []struct{ key, v string }{{"ds_default_socket", c.DefaultSocket}, {"ds_ping_socket", c.PingSocket}} {
		if s.v != "" {
			if err := checkSocket(s.v); err != nil {
				bad(s.key, strconv.Quote(s.v), err.Error())
			}
		}
	}
	if c.DBExtraAttrs != "" {
		if _, err := ParseExtraAttrs(c.DBExtraAttrs); err != nil {
			bad("ds_db_extra_attrs", strconv.Quote(c.DBExtraAttrs), err.Error())
		}
	}
	if c.ReloadDelta < 0 {
		bad("reload_delta", c.ReloadDelta, "must be >= 0 seconds")
	}
	if c.HashSize < 0 || c.HashSize > 24 {
		bad("ds_hash_size", c.HashSize, "must be 0..24 (log2 of the slots)")
	}
	if c.HashExpire < 1 {
		bad("ds_hash_expire", c.HashExpire, "must be >= 1 second")
	}
	if c.HashInitExpire < 1 {
		bad("ds_hash_initexpire", c.HashInitExpire, "must be >= 1 second")
	}
	if c.HashCheckInterval < 1 {
		bad("ds_hash_check_interval", c.HashCheckInterval, "must be >= 1 second")
	}
	if c.HashFallback != "next" && c.HashFallback != "rehash" {
		bad("hash_fallback", strconv.Quote(c.HashFallback), `must be "next" or "rehash"`)
	}
	if c.LoadMode != 0 && c.LoadMode != 1 {
		bad("ds_load_mode", c.LoadMode, "must be 0 or 1")
	}
	if c.DNSMode < 0 || c.DNSMode > 15 {
		bad("ds_dns_mode", c.DNSMode, "must be 0..15 (bits 1 load, 2 each from_set, 4 timer, 8 SRV)")
	}
	if c.DNSInterval < 1 {
		bad("ds_dns_interval", c.DNSInterval, "must be >= 1 second")
	}
	if c.DNSTTL < 0 {
		bad("ds_dns_ttl", c.DNSTTL, "must be >= 0 seconds (0 = the records' TTL)")
	}
	if c.DNSMatchAll != 0 && c.DNSMatchAll != 1 {
		bad("ds_dns_match_all", c.DNSMatchAll, "must be 0 or 1")
	}
	return errors.Join(errs...)
}
