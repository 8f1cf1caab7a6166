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
}

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
		HashExpire:            7200,
		HashInitExpire:        7200,
		HashCheckInterval:     30,
		HashFallback:          "next",
		LoadMode:              1,
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
	return errors.Join(errs...)
}
