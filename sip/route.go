package sip

// TEMPORARY contract for the routes helper: the types are the agreed API; the
// bodies are replaced by the real implementation before anything lands.

import (
	"errors"
	"regexp"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// RouteConfig is one entry of the `routes:` list (SPEC §6) as decoded from YAML.
type RouteConfig struct {
	Name     string          `yaml:"name"`
	Match    MatchConfig     `yaml:"match"`
	Dispatch *DispatchConfig `yaml:"dispatch"`
	Reply    *ReplyConfig    `yaml:"reply"`
}

// MatchConfig are a route's conditions; all given ones must hold.
type MatchConfig struct {
	FromSet    *int         `yaml:"from_set"`    // ds_is_from_list(set): source matches a destination of the set
	Methods    []string     `yaml:"methods"`     // request methods, any of
	RURIUser   string       `yaml:"ruri_user"`   // regex on the Request-URI user
	RURIDomain string       `yaml:"ruri_domain"` // regex on the Request-URI host
	FromURI    string       `yaml:"from_uri"`    // regex on the From URI
	ToURI      string       `yaml:"to_uri"`      // regex on the To URI
	Header     *HeaderMatch `yaml:"header"`      // regex on a header value
	Source     string       `yaml:"source"`      // CIDR the source address must be in
}

// HeaderMatch matches one header's value.
type HeaderMatch struct {
	Name  string `yaml:"name"`
	Regex string `yaml:"regex"`
}

// DispatchConfig sends matching requests to a set.
type DispatchConfig struct {
	Set      int               `yaml:"set"`
	Alg      int               `yaml:"alg"`
	Mode     string            `yaml:"mode"`  // "dst" (ds_select_dst, default) or "domain" (ds_select_domain: rewrite R-URI host)
	Limit    int               `yaml:"limit"` // 0 = no cap on the selection length
	Failover FailoverConfig    `yaml:"failover"`
	Headers  map[string]string `yaml:"headers"` // added to the forwarded request; values are templates
}

// FailoverConfig says which final replies move a call to the next destination.
type FailoverConfig struct {
	On   []string `yaml:"on"`   // codes ("503") or classes ("5xx"); default 408 and 5xx... see docs
	Mark string   `yaml:"mark"` // ds_mark_dst state applied on failover ("" = no marking), e.g. "ip", "t"
}

// ReplyConfig answers matching requests locally.
type ReplyConfig struct {
	Code   int    `yaml:"code"`
	Reason string `yaml:"reason"`
}

// Route is a compiled route.
type Route struct {
	Name     string
	Dispatch *Dispatch // nil for reply routes
	Reply    *ReplyConfig
	match    compiledMatch
}

// Dispatch is a compiled DispatchConfig.
type Dispatch struct {
	Set      int
	Alg      dispatch.Algorithm
	Domain   bool // mode domain
	Limit    int
	Mark     *dispatch.MarkOp // nil = do not mark on failover
	Headers  []HeaderTemplate // in name order
	failover []codeRange
}

// HeaderTemplate is one header added to forwarded requests.
type HeaderTemplate struct {
	Name  string
	Value *dispatch.Template
}

type codeRange struct{ lo, hi int }

type compiledMatch struct {
	ruriUser *regexp.Regexp
}

// FailoverOn reports whether a final reply code (408 for a timeout, 503 for a
// transport error) moves the call to the next destination.
func (d *Dispatch) FailoverOn(code int) bool { return false }

// Router holds the compiled routes in order.
type Router struct{ routes []*Route }

// NewRouter compiles routes; every bad route field is an error naming the
// route (index and name) and the field. With no routes it builds SPEC §6's
// default: every initial request to defaultSet with algorithm 4.
func NewRouter(routes []RouteConfig, defaultSet int) (*Router, error) {
	return nil, errors.New("not implemented")
}

// Match returns the first route whose conditions hold for req, or nil (404).
// fromSet answers ds_is_from_list for a set id against req's source.
func (r *Router) Match(req *dispatch.Request, fromSet func(setID int) bool) *Route { return nil }
