package sip

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// RouteConfig is one entry of the `routes:` list (docs/configuration.md#routes)
// as decoded from YAML.
type RouteConfig struct {
	Name     string          `yaml:"name"`
	Match    MatchConfig     `yaml:"match,omitempty"`
	Dispatch *DispatchConfig `yaml:"dispatch,omitempty"`
	Reply    *ReplyConfig    `yaml:"reply,omitempty"`
}

// MatchConfig are a route's conditions; all given ones must hold. Regexes use
// Go's RE2 syntax and, like Kamailio's `=~`, match anywhere in the value
// unless anchored with ^ and $.
type MatchConfig struct {
	// FromSet is ds_is_from_list: the source matches a destination of the
	// set, or of any set ("any", Kamailio's ds_is_from_list()).
	FromSet *FromSet `yaml:"from_set,omitempty"`
	// FromSetMode is ds_is_from_list's mode: bit 1 ignores the source port,
	// bit 2 the transport; 0 matches address, port and transport. Unset, it
	// is Kamailio's ds_is_from_list()/ds_is_from_list(set) mode, 2
	// (DefaultFromSetMode): address and port, any transport.
	FromSetMode *int         `yaml:"from_set_mode,omitempty"`
	Methods     []string     `yaml:"methods,omitempty"`     // request methods, any of
	RURIUser    string       `yaml:"ruri_user,omitempty"`   // regex on the Request-URI user
	RURIDomain  string       `yaml:"ruri_domain,omitempty"` // regex on the Request-URI host
	FromURI     string       `yaml:"from_uri,omitempty"`    // regex on the From URI
	ToURI       string       `yaml:"to_uri,omitempty"`      // regex on the To URI
	Header      *HeaderMatch `yaml:"header,omitempty"`      // regex on a header value
	Source      string       `yaml:"source,omitempty"`      // CIDR (or address) the source must be in; several separated by commas
}

// DefaultFromSetMode is the mode of a from_set without from_set_mode:
// Kamailio's ds_is_from_list() and ds_is_from_list(set) call
// ds_is_addr_from_list with DS_MATCH_NOPROTO, so the transport is not
// compared.
const DefaultFromSetMode = 2

// FromSet names the set(s) match.from_set checks: a set id, or Any for every
// set. In YAML it is an integer or the word "any".
type FromSet struct {
	ID  int  // the set id; ignored with Any
	Any bool // every set (Kamailio's ds_is_from_list() without a group)
}

// SetID is a from_set naming set id.
func SetID(id int) *FromSet { return &FromSet{ID: id} }

// AnySet is from_set: any.
func AnySet() *FromSet { return &FromSet{Any: true} }

// String renders f as written in YAML.
func (f FromSet) String() string {
	if f.Any {
		return "any"
	}
	return strconv.Itoa(f.ID)
}

// setID is what the fromSet callback gets: the id, or -1 for any set.
func (f FromSet) setID() int {
	if f.Any {
		return -1
	}
	return f.ID
}

// UnmarshalYAML accepts an integer set id or "any".
func (f *FromSet) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if strings.EqualFold(n.Value, "any") {
			*f = FromSet{Any: true}
			return nil
		}
		var id int
		if n.ShortTag() == "!!int" && n.Decode(&id) == nil {
			*f = FromSet{ID: id}
			return nil
		}
	}
	what := fmt.Sprintf("from_set %q", n.Value)
	switch n.Kind {
	case yaml.SequenceNode:
		what = "from_set list"
	case yaml.MappingNode:
		what = "from_set mapping"
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s: want a set id or \"any\"", n.Line, what)}}
}

// MarshalYAML writes the id as an integer, Any as "any".
func (f FromSet) MarshalYAML() (any, error) {
	if f.Any {
		return "any", nil
	}
	return f.ID, nil
}

// HeaderMatch matches one header's value. An empty Regex only requires the
// header to be present.
type HeaderMatch struct {
	Name  string `yaml:"name"`
	Regex string `yaml:"regex,omitempty"`
}

// DispatchConfig sends matching requests to a set.
type DispatchConfig struct {
	Set      int               `yaml:"set"`
	Alg      int               `yaml:"alg,omitempty"`
	Mode     string            `yaml:"mode,omitempty"`  // "dst" (ds_select_dst, default) or "domain" (ds_select_domain: rewrite R-URI host)
	Limit    int               `yaml:"limit,omitempty"` // 0 = no cap on the selection length
	Failover FailoverConfig    `yaml:"failover"`
	Headers  map[string]string `yaml:"headers,omitempty"` // added to the forwarded request; values are templates
	// OnEmpty is what happens when the set has no destination to select:
	// "reply" (default) answers 503; "next" passes the request to the next
	// route that matches, as a Kamailio script falls through to another
	// ds_select_dst when the first returns false.
	OnEmpty string `yaml:"on_empty,omitempty"`
}

// FailoverConfig says which final replies move a call to the next destination.
type FailoverConfig struct {
	On   []string `yaml:"on"`             // codes ("503"), classes ("5xx") or "timeout" (= 408); absent: DefaultFailoverOn; [] = never
	Mark string   `yaml:"mark,omitempty"` // ds_mark_dst state applied on failover ("" = no marking), e.g. "ip", "t"
}

// DefaultFailoverOn is what a route fails over on when `failover.on` is
// absent: a timeout (408, also what a silent gateway produces) and any 5xx,
// which covers the 500 and 503 a Kamailio failure_route usually checks.
// 6xx is left out because it is a global answer (RFC 3261 §16.7: a proxy
// stops forwarding on a 6xx); list "6xx" to fail over on it anyway.
var DefaultFailoverOn = []string{"408", "5xx"}

// MarshalYAML writes `on` only when it was given, so that writing a
// configuration back keeps an absent `on` (the default) apart from `on: []`
// (never fail over).
func (f FailoverConfig) MarshalYAML() (any, error) {
	m := map[string]any{}
	if f.On != nil {
		m["on"] = f.On
	}
	if f.Mark != "" {
		m["mark"] = f.Mark
	}
	return m, nil
}

// ReplyConfig answers matching requests locally.
type ReplyConfig struct {
	Code   int    `yaml:"code"`
	Reason string `yaml:"reason,omitempty"`
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
	Set     int
	Alg     dispatch.Algorithm // Alg.Known() false: the first active entry (Kamailio too, except its 64); `check` warns
	Domain  bool               // mode domain
	Limit   int
	Mark    *dispatch.MarkOp // nil = do not mark on failover
	Headers []HeaderTemplate // in name order
	// OnEmptyNext: with no destination to select, the next matching route
	// takes the request instead of a 503 (on_empty: next).
	OnEmptyNext bool
	failover    []codeRange
}

// HeaderTemplate is one header added to forwarded requests.
type HeaderTemplate struct {
	Name  string
	Value *dispatch.Template
}

type codeRange struct{ lo, hi int }

// compiledMatch holds a route's conditions; a nil or empty field is not checked.
type compiledMatch struct {
	fromSet     *int // set id, -1 for any set
	fromSetMode int
	methods     []string
	ruriUser    *regexp.Regexp
	ruriDomain  *regexp.Regexp
	fromURI     *regexp.Regexp
	toURI       *regexp.Regexp
	header      string
	headerRe    *regexp.Regexp // nil with header set: presence only
	sources     []netip.Prefix
}

// RouteError is one bad field of one route. Field is the YAML path inside the
// route, e.g. "dispatch.alg" or "match.ruri_user".
type RouteError struct {
	Index int
	Name  string
	Field string
	Err   error
}

func (e *RouteError) Error() string {
	return fmt.Sprintf("routes[%d] %q: %s: %v", e.Index, e.Name, e.Field, e.Err)
}

func (e *RouteError) Unwrap() error { return e.Err }

// FailoverOn reports whether a final reply code (408 for a timeout, 503 for a
// transport error) moves the call to the next destination.
func (d *Dispatch) FailoverOn(code int) bool {
	for _, r := range d.failover {
		if r.lo <= code && code <= r.hi {
			return true
		}
	}
	return false
}

// Router holds the compiled routes in order. It is immutable after NewRouter
// and safe for concurrent use.
type Router struct{ routes []*Route }

// DefaultRouteName names the route NewRouter builds when no routes are given.
const DefaultRouteName = "default"

// NewRouter compiles routes; every bad route field is an error naming the route
// (index and name) and the field. With no routes it builds the default of
// docs/configuration.md#routes: every initial request to defaultSet with
// algorithm 4.
func NewRouter(routes []RouteConfig, defaultSet int) (*Router, error) {
	if len(routes) == 0 {
		routes = []RouteConfig{{
			Name:     DefaultRouteName,
			Dispatch: &DispatchConfig{Set: defaultSet, Alg: int(dispatch.AlgRoundRobin)},
		}}
	}
	r := &Router{routes: make([]*Route, 0, len(routes))}
	var errs []error
	for i := range routes {
		rt, rerrs := compileRoute(i, &routes[i])
		errs = append(errs, rerrs...)
		r.routes = append(r.routes, rt)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Routes returns the compiled routes in match order (for `check` and the API).
func (r *Router) Routes() []*Route { return r.routes }

// Match returns the first route whose conditions hold for req, or nil (404).
// fromSet answers ds_is_from_list for a set id (-1: any set) and mode
// against req's source; a nil fromSet matches no set.
func (r *Router) Match(req *dispatch.Request, fromSet func(setID, mode int) bool) *Route {
	return r.matchFrom(0, req, fromSet)
}

// Next returns the first route after after whose conditions hold, or nil:
// where a route with on_empty: next passes a request its set cannot take.
func (r *Router) Next(after *Route, req *dispatch.Request, fromSet func(setID, mode int) bool) *Route {
	for i, rt := range r.routes {
		if rt == after {
			return r.matchFrom(i+1, req, fromSet)
		}
	}
	return nil
}

func (r *Router) matchFrom(i int, req *dispatch.Request, fromSet func(setID, mode int) bool) *Route {
	v := requestView{req: req}
	for _, rt := range r.routes[i:] {
		if rt.match.holds(&v, fromSet) {
			return rt
		}
	}
	return nil
}

func compileRoute(i int, c *RouteConfig) (*Route, []error) {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &RouteError{Index: i, Name: c.Name, Field: field, Err: fmt.Errorf(format, args...)})
	}
	rt := &Route{Name: c.Name}
	if rt.Name == "" {
		rt.Name = "route" + strconv.Itoa(i)
	}
	compileMatchConfig(&c.Match, &rt.match, bad)
	switch {
	case c.Dispatch != nil && c.Reply != nil:
		bad("dispatch", "a route has either dispatch or reply, not both")
	case c.Dispatch == nil && c.Reply == nil:
		bad("dispatch", "a route needs dispatch or reply")
	case c.Dispatch != nil:
		rt.Dispatch = compileDispatch(c.Dispatch, bad)
	default:
		rt.Reply = compileReply(c.Reply, bad)
	}
	return rt, errs
}

type badFunc func(field string, format string, args ...any)

func compileMatchConfig(c *MatchConfig, m *compiledMatch, bad badFunc) {
	if c.FromSet != nil {
		if !c.FromSet.Any && c.FromSet.ID < 0 {
			bad("match.from_set", "%d: must be a set id >= 0 or \"any\"", c.FromSet.ID)
		}
		id := c.FromSet.setID()
		m.fromSet = &id
	}
	m.fromSetMode = DefaultFromSetMode
	if c.FromSetMode != nil {
		switch mode := *c.FromSetMode; {
		case mode < 0 || mode > 3:
			bad("match.from_set_mode", "%d: must be 0..3 (bit 1 ignores the port, bit 2 the transport)", mode)
		case c.FromSet == nil:
			bad("match.from_set_mode", "%d: needs from_set", mode)
		default:
			m.fromSetMode = mode
		}
	}
	for j, meth := range c.Methods {
		u := strings.ToUpper(strings.TrimSpace(meth))
		if !isToken(u) {
			bad(fmt.Sprintf("match.methods[%d]", j), "%q: not a SIP method token", meth)
			continue
		}
		m.methods = append(m.methods, u)
	}
	re := func(field, expr string) *regexp.Regexp {
		if expr == "" {
			return nil
		}
		x, err := regexp.Compile(expr)
		if err != nil {
			bad(field, "%w", err)
		}
		return x
	}
	m.ruriUser = re("match.ruri_user", c.RURIUser)
	m.ruriDomain = re("match.ruri_domain", c.RURIDomain)
	m.fromURI = re("match.from_uri", c.FromURI)
	m.toURI = re("match.to_uri", c.ToURI)
	if c.Header != nil {
		m.header = strings.TrimSpace(c.Header.Name)
		if !isToken(m.header) {
			bad("match.header.name", "%q: must be a header name", c.Header.Name)
		}
		m.headerRe = re("match.header.regex", c.Header.Regex)
	}
	if strings.TrimSpace(c.Source) != "" {
		for _, s := range strings.Split(c.Source, ",") {
			p, err := parsePrefix(strings.TrimSpace(s))
			if err != nil {
				bad("match.source", "%q: %w", s, err)
				continue
			}
			m.sources = append(m.sources, p)
		}
	}
}

// parsePrefix reads a CIDR or a single address (a host prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not an address or CIDR")
		}
		if p.Addr().Is4In6() { // ::ffff:a.b.c.d/n: compare as IPv4, as sources are unmapped
			if p.Bits() < 96 {
				return netip.Prefix{}, errors.New("IPv4-mapped prefix shorter than /96")
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Prefix{}, errors.New("not an address or CIDR")
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func compileDispatch(c *DispatchConfig, bad badFunc) *Dispatch {
	d := &Dispatch{Set: c.Set, Alg: dispatch.Algorithm(c.Alg), Limit: c.Limit}
	if c.Set < 0 {
		bad("dispatch.set", "%d: must be a set id >= 0", c.Set)
	}
	if c.Alg < 0 {
		bad("dispatch.alg", "%d: must be >= 0 (0..%d are implemented)", c.Alg, int(dispatch.MaxAlgorithm))
	}
	switch strings.ToLower(c.Mode) {
	case "", "dst":
	case "domain":
		d.Domain = true
	default:
		bad("dispatch.mode", "%q: must be dst or domain", c.Mode)
	}
	if c.Limit < 0 {
		bad("dispatch.limit", "%d: must be >= 0 (0 = no cap)", c.Limit)
	}
	switch strings.ToLower(c.OnEmpty) {
	case "", "reply":
	case "next":
		d.OnEmptyNext = true
	default:
		bad("dispatch.on_empty", "%q: must be reply or next", c.OnEmpty)
	}
	on := c.Failover.On
	if on == nil {
		on = DefaultFailoverOn
	}
	for j, s := range on {
		r, err := parseCodeRange(s)
		if err != nil {
			bad(fmt.Sprintf("dispatch.failover.on[%d]", j), "%q: %w", s, err)
			continue
		}
		d.failover = append(d.failover, r)
	}
	if c.Failover.Mark != "" {
		op, err := compileMark(c.Failover.Mark)
		if err != nil {
			bad("dispatch.failover.mark", "%q: %w", c.Failover.Mark, err)
		}
		d.Mark = op
	}
	names := make([]string, 0, len(c.Headers))
	for n := range c.Headers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		field := "dispatch.headers." + n
		v := c.Headers[n]
		if !isToken(n) {
			bad(field, "%q: must be a header name", n)
			continue
		}
		if reservedHeader(n) {
			bad(field, "%s is managed by the proxy and cannot be added", n)
			continue
		}
		if strings.ContainsAny(v, "\r\n") {
			bad(field, "value must be one line")
			continue
		}
		t, err := dispatch.ParseTemplate(v)
		if err != nil {
			bad(field, "%q: %w", v, err)
			continue
		}
		d.Headers = append(d.Headers, HeaderTemplate{Name: n, Value: t})
	}
	return d
}

// compileMark parses failover.mark with ds_mark_dst's state letters.
func compileMark(s string) (*dispatch.MarkOp, error) {
	op, err := dispatch.ParseMarkState(s)
	if err != nil {
		return nil, err
	}
	return &op, nil
}

// parseCodeRange reads "503", "5xx" or "timeout" (a 408, as a transaction
// timeout is reported).
func parseCodeRange(s string) (codeRange, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "timeout" {
		return codeRange{408, 408}, nil
	}
	if len(s) == 3 && s[1:] == "xx" && '3' <= s[0] && s[0] <= '6' {
		lo := int(s[0]-'0') * 100
		return codeRange{lo, lo + 99}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || len(s) != 3 {
		return codeRange{}, errors.New(`want a code like "503", a class like "5xx" or "timeout"`)
	}
	if n < 300 || n > 699 {
		return codeRange{}, errors.New("only final non-2xx replies (300..699) can fail over")
	}
	return codeRange{n, n}, nil
}

func compileReply(c *ReplyConfig, bad badFunc) *ReplyConfig {
	r := *c
	if r.Code < 200 || r.Code > 699 {
		bad("reply.code", "%d: must be a final reply code 200..699", r.Code)
	}
	if strings.ContainsAny(r.Reason, "\r\n") {
		bad("reply.reason", "must be one line")
	}
	if r.Reason == "" {
		r.Reason = reasonPhrase(r.Code)
	}
	return &r
}

// reasonPhrase is the RFC 3261 §21 phrase for the codes a local reply route
// or the proxy itself typically sends, so `reply: {code: 404}` needs no
// reason; other codes get their class's phrase.
func reasonPhrase(code int) string {
	switch code {
	case 200:
		return "OK"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 486:
		return "Busy Here"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	switch code / 100 {
	case 2:
		return "OK"
	case 3:
		return "Redirect"
	case 4:
		return "Client Error"
	case 5:
		return "Server Error"
	}
	return "Global Failure"
}

// reservedHeader reports headers the proxy itself writes (RFC 3261 §16.6);
// adding another copy would break routing or the transaction.
func reservedHeader(name string) bool {
	switch strings.ToLower(name) {
	case "via", "v", "route", "record-route", "max-forwards", "call-id", "i", "cseq",
		"from", "f", "to", "t", "contact", "m", "content-length", "l":
		return true
	}
	return false
}

// isToken reports whether s is a non-empty RFC 3261 §25.1 token.
func isToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			return false
		}
	}
	return true
}

// tokenChar reports whether c may appear in a token.
func tokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-.!%*_+`'~", c) >= 0
}

func (m *compiledMatch) holds(v *requestView, fromSet func(setID, mode int) bool) bool {
	req := v.req
	if len(m.methods) > 0 && !containsString(m.methods, req.Method) {
		return false
	}
	if len(m.sources) > 0 && !m.sourceHolds(req.SrcIP) {
		return false
	}
	if m.ruriUser != nil && !m.ruriUser.MatchString(v.ruri().user) {
		return false
	}
	if m.ruriDomain != nil && !m.ruriDomain.MatchString(v.ruri().host) {
		return false
	}
	if m.fromURI != nil && !m.fromURI.MatchString(req.From) {
		return false
	}
	if m.toURI != nil && !m.toURI.MatchString(req.To) {
		return false
	}
	if m.header != "" {
		val, ok := req.Header(m.header)
		if !ok || (m.headerRe != nil && !m.headerRe.MatchString(val)) {
			return false
		}
	}
	// Last: ds_is_from_list asks the set, the costliest check.
	if m.fromSet != nil && (fromSet == nil || !fromSet(*m.fromSet, m.fromSetMode)) {
		return false
	}
	return true
}

func (m *compiledMatch) sourceHolds(ip string) bool {
	a, err := netip.ParseAddr(strings.Trim(ip, "[]"))
	if err != nil {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range m.sources {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// requestView parses the Request-URI once per Match, and only if a route asks.
type requestView struct {
	req    *dispatch.Request
	parsed bool
	r      uriParts
}

func (v *requestView) ruri() uriParts {
	if !v.parsed {
		v.r = splitURI(v.req.RURI)
		v.parsed = true
	}
	return v.r
}

// uriParts are the user and host of a URI, as Kamailio's $rU and $rd.
type uriParts struct{ user, host string }

// splitURI takes the user and host out of a raw sip:, sips: or tel: URI
// without allocating. It is lenient, as a matcher must be: a display name or
// angle brackets are skipped, and text it cannot read yields empty parts.
func splitURI(s string) uriParts {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
	}
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return uriParts{}
	}
	scheme, rest := s[:colon], s[colon+1:]
	if strings.EqualFold(scheme, "tel") {
		// RFC 3966: the number is the user; there is no host.
		if i := strings.IndexAny(rest, ";?"); i >= 0 {
			rest = rest[:i]
		}
		return uriParts{user: rest}
	}
	var p uriParts
	// RFC 3261 §25.1 allows ';' and '?' in the user part, so the first '@'
	// ends it, as in Kamailio's parser.
	if at := strings.IndexByte(rest, '@'); at >= 0 {
		p.user = rest[:at]
		if i := strings.IndexByte(p.user, ':'); i >= 0 { // user:password
			p.user = p.user[:i]
		}
		rest = rest[at+1:]
	}
	if strings.HasPrefix(rest, "[") {
		if i := strings.IndexByte(rest, ']'); i >= 0 {
			p.host = rest[:i+1]
			return p
		}
		return uriParts{user: p.user}
	}
	if i := strings.IndexAny(rest, ":;?>"); i >= 0 {
		rest = rest[:i]
	}
	p.host = rest
	return p
}
