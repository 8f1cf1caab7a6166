package kamcfg

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sipdispatch/sipdispatch/sip"
)

// Options steer a translation.
type Options struct {
	// ListFile, when set, replaces the dispatcher's list_file (and db_url).
	ListFile string
	// DispatcherKey says how sipdispatch's configuration takes a dispatcher
	// modparam with its value: KeyMapped (a key with the same name), KeyNoop
	// (accepted with a warning), KeyUnknown. The configuration loader owns
	// that list.
	DispatcherKey func(name string, value any) KeyKind
}

// KeyKind is how the configuration takes a dispatcher modparam.
type KeyKind int

const (
	KeyUnknown KeyKind = iota // not a key of the configuration
	KeyMapped                 // a dispatcher key with the modparam's name
	KeyNoop                   // accepted, with a warning that it has no effect
)

// Note is one line of the report.
type Note struct {
	Pos        string // Kamailio file:line
	Translated bool
	What, Why  string
}

// Report lists what was translated and what was not.
type Report struct{ Notes []Note }

func (r *Report) add(p pos, ok bool, what, why string) {
	r.Notes = append(r.Notes, Note{Pos: p.String(), Translated: ok, What: what, Why: why})
}

// WriteTo prints the report, one note a line.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, x := range r.Notes {
		verdict := "translated"
		if !x.Translated {
			verdict = "not translated"
		}
		k, err := fmt.Fprintf(w, "%s: %s: %s: %s\n", x.Pos, verdict, x.What, x.Why)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Result is a translation: the sipdispatch YAML and the report.
type Result struct {
	YAML   []byte
	Report Report
}

// Translate reads the Kamailio configuration at path.
func Translate(path string, opt Options) (*Result, error) {
	res := &Result{}
	lines, err := preprocess(path, map[string]string{}, &res.Report, 0)
	if err != nil {
		return nil, err
	}
	t := &translator{s: parseScript(lex(lines)), r: &res.Report, opt: opt, vars: map[string]string{}}
	t.globals()
	t.modparams()
	if opt.ListFile != "" && !t.hasDisp("list_file") {
		t.disp = append([]kv{{key: "list_file", val: opt.ListFile}}, t.disp...)
	}
	t.requestRoute()
	res.YAML, err = t.yaml()
	return res, err
}

type translator struct {
	s   *script
	r   *Report
	opt Options

	listen    []kv // values: "proto:host:port"
	advertise *kv
	proxy     []kv
	disp      []kv
	routes    []route
	relay     map[string]bool // t_relay / forward seen
	vars      map[string]string
	varPos    map[string]pos
	names     map[string]int
	flags     int
	// hashVarsDone: hash_pvar_vars was written (at the first alg-7 route).
	hashVarsDone bool
}

type kv struct {
	key string
	val any
	pos pos
}

type route struct {
	cfg     sip.RouteConfig
	pos     pos
	failure string
	conds   []string // the conditions it was emitted under (translated or not)
}

// impliedByOrder reports whether "not neg" holds for every request that
// reaches a later route because routes match in order: an earlier route
// matched exactly neg plus conditions that also hold here, so the requests
// where neg holds never get this far.
func (t *translator) impliedByOrder(neg string, held []string) bool {
	for _, r := range t.routes {
		has := false
		ok := true
		for _, c := range r.conds {
			if c == neg {
				has = true
			} else if !slices.Contains(held, c) {
				ok = false
			}
		}
		if has && ok {
			return true
		}
	}
	return false
}

// globals translates listen= and the advertise forms.
func (t *translator) globals() {
	advAddr, advPort := "", ""
	var advAt pos
	for _, g := range t.s.globals {
		switch g.name {
		case "listen":
			addr, adv := joinTokens(g.toks), ""
			if a, b, ok := strings.Cut(addr, "advertise"); ok {
				addr, adv = strings.TrimSpace(a), strings.TrimSpace(b)
			}
			if a, _, ok := strings.Cut(addr, "name"); ok {
				addr = strings.TrimSpace(a)
			}
			t.addListen(g.pos, addr)
			if adv != "" {
				if t.advertise != nil && t.advertise.val != adv {
					t.r.add(g.pos, false, "advertise "+adv, fmt.Sprintf("sipdispatch has one advertise address; %v from %s is kept", t.advertise.val, t.advertise.pos))
					continue
				}
				t.advertise = &kv{"advertise", adv, g.pos}
				t.r.add(g.pos, true, "listen ... advertise "+adv, "advertise: "+adv)
			}
		case "advertised_address":
			advAddr, advAt = joinTokens(g.toks), g.pos
		case "advertised_port":
			advPort = joinTokens(g.toks)
		case "port":
			t.r.add(g.pos, false, "port="+joinTokens(g.toks), "write the port in each listen entry")
		}
	}
	if advAddr != "" && t.advertise == nil {
		a := advAddr
		if advPort != "" {
			a += ":" + advPort
		}
		t.advertise = &kv{"advertise", a, advAt}
		t.r.add(advAt, true, "advertised_address", "advertise: "+a)
	}
}

var ipLike = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(:[0-9]+)?$`)

// addListen translates one listen= value: [proto:]host[:port].
func (t *translator) addListen(p pos, addr string) {
	proto, rest, ok := strings.Cut(addr, ":")
	protos := []string{"udp", "tcp"}
	switch {
	case ok && (proto == "udp" || proto == "tcp"):
		protos = []string{proto}
	case ok && (proto == "tls" || proto == "sctp" || proto == "ws" || proto == "wss"):
		t.r.add(p, false, "listen="+addr, proto+" listeners are not translated (tls needs proxy.tls_cert and tls_key, written by hand; sctp and websockets are not supported)")
		return
	default:
		rest = addr
	}
	if !ipLike.MatchString(rest) {
		t.r.add(p, false, "listen="+addr, "sipdispatch listens on IP addresses only (no interface or host names)")
		return
	}
	for _, pr := range protos {
		t.listen = append(t.listen, kv{"listen", pr + ":" + rest, p})
	}
	t.r.add(p, true, "listen="+addr, "listen: "+strings.Join(protos, "/")+" "+rest)
}

func joinTokens(toks []token) string {
	var b strings.Builder
	for i, x := range toks {
		if i > 0 && x.kind == 'i' && (x.text == "advertise" || x.text == "name") {
			b.WriteString(" " + x.text + " ")
			continue
		}
		b.WriteString(x.text)
	}
	return strings.TrimSpace(b.String())
}

// modparams translates dispatcher's and tm's parameters.
func (t *translator) modparams() {
	for _, m := range t.s.modparams {
		what := fmt.Sprintf("modparam(%q, %q)", m.module, m.name)
		switch m.module {
		case "tm":
			if m.name != "fr_timer" && m.name != "fr_inv_timer" {
				continue
			}
			ms, err := strconv.Atoi(m.value)
			if err != nil {
				t.r.add(m.pos, false, what, "not a number of milliseconds")
				continue
			}
			d := fmt.Sprintf("%dms", ms)
			t.proxy = append(t.proxy, kv{m.name, d, m.pos})
			t.r.add(m.pos, true, what, "proxy."+m.name+": "+d)
		case "dispatcher":
			t.dispatcherParam(m, what)
		}
	}
}

func (t *translator) dispatcherParam(m modparam, what string) {
	var v any = m.value
	if m.isNumber {
		n, err := strconv.Atoi(m.value)
		if err != nil {
			t.r.add(m.pos, false, what, "not an integer")
			return
		}
		v = n
	}
	kind := KeyUnknown
	if t.opt.DispatcherKey != nil {
		kind = t.opt.DispatcherKey(m.name, v)
	}
	if kind == KeyUnknown {
		t.r.add(m.pos, false, what, "not supported yet")
		return
	}
	switch {
	case m.name == "list_file" && t.opt.ListFile != "":
		v = t.opt.ListFile
	case m.name == "db_url" && t.opt.ListFile != "":
		t.r.add(m.pos, false, what, "-list names a list file instead")
		return
	case m.name == "flags":
		t.flags, _ = v.(int)
	}
	t.disp = append(t.disp, kv{m.name, v, m.pos})
	if kind == KeyNoop {
		t.r.add(m.pos, true, what, "dispatcher."+m.name+" (accepted; it has no effect in sipdispatch)")
		return
	}
	t.r.add(m.pos, true, what, fmt.Sprintf("dispatcher.%s: %v", m.name, v))
}

func (t *translator) hasDisp(key string) bool {
	for _, d := range t.disp {
		if d.key == key {
			return true
		}
	}
	return false
}

// cond is one condition on the way to a statement.
type cond struct {
	toks []token
	neg  bool
}

// walker walks request_route and the routes it calls.
type walker struct {
	t       *translator
	failure string // last t_on_failure name
	pending []int  // routes whose relay has not been seen yet
	depth   int
}

func (t *translator) requestRoute() {
	t.relay = map[string]bool{}
	t.names = map[string]int{}
	body, ok := t.s.routes["request"]
	if !ok {
		t.r.add(pos{"(config)", 0}, false, "request_route", "none found: no routes written; sipdispatch's default route applies")
		return
	}
	w := &walker{t: t}
	w.block(body, nil, "request")
	switch {
	case t.relay["t_relay"]:
		t.proxy = append([]kv{{"mode", "stateful", t.s.routePos["request"]}}, t.proxy...)
	case t.relay["forward"]:
		t.proxy = append([]kv{{"mode", "stateless", t.s.routePos["request"]}}, t.proxy...)
		t.r.add(t.s.routePos["request"], true, "forward()", "proxy.mode: stateless")
	}
	for i := range t.routes {
		t.failureRoute(&t.routes[i])
	}
}

// block walks statements under conds and reports whether the block always
// ends processing (exit, drop, or a route that does).
func (w *walker) block(body []stmt, conds []cond, rname string) bool {
	for _, st := range body {
		switch st.kind {
		case 'b':
			if w.block(st.then, conds, rname) {
				return true
			}
		case 'a':
			w.t.vars[st.text] = valueTemplate(st.args)
			if w.t.varPos == nil {
				w.t.varPos = map[string]pos{}
			}
			w.t.varPos[st.text] = st.pos
		case 'o':
			if st.text == "exit" || st.text == "drop" || st.text == "return" {
				return true
			}
		case 'c':
			if w.call(st, conds, rname) {
				return true
			}
		case 'i':
			for i, x := range st.cond {
				if x.kind == 'i' && (strings.HasPrefix(x.text, "t_relay") || strings.HasPrefix(x.text, "forward")) && i+1 < len(st.cond) && st.cond[i+1].text == "(" {
					w.call(stmt{pos: x.pos, kind: 'c', call: x.text}, conds, rname)
				}
			}
			if call, ok := dsCall(st.cond); ok {
				w.site(call, conds, rname)
				if len(st.cond) > 0 && st.cond[0].text == "!" {
					w.noDestination(call, st.then)
				}
				thenExits := w.block(st.then, conds, rname)
				elseExits := w.block(st.els, conds, rname)
				if thenExits && elseExits {
					return true
				}
				continue
			}
			c := cond{toks: st.cond}
			thenExits := w.block(st.then, append(conds[:len(conds):len(conds)], c), rname)
			neg := cond{toks: st.cond, neg: true}
			elseExits := w.block(st.els, append(conds[:len(conds):len(conds)], neg), rname)
			switch {
			case thenExits && elseExits:
				return true
			case thenExits:
				conds = append(conds[:len(conds):len(conds)], neg)
			case elseExits:
				conds = append(conds[:len(conds):len(conds)], c)
			}
		}
	}
	return false
}

// call handles a call statement; it reports whether processing ends there.
func (w *walker) call(st stmt, conds []cond, rname string) bool {
	switch st.call {
	case "route":
		if len(st.args) != 1 || w.depth > 16 {
			return false
		}
		name := st.args[0].text
		body, ok := w.t.s.routes["route:"+name]
		if !ok {
			w.t.r.add(st.pos, false, "route("+name+")", "no such route block")
			return false
		}
		w.depth++
		defer func() { w.depth-- }()
		return w.blockRoute(body, conds, name)
	case "ds_select_dst", "ds_select_domain", "ds_select":
		w.site(st, conds, rname)
	case "t_on_failure":
		if len(st.args) == 1 {
			w.failure = st.args[0].text
			for _, i := range w.pending {
				if w.t.routes[i].failure == "" {
					w.t.routes[i].failure = w.failure
				}
			}
		}
	case "t_relay", "t_relay_to_udp", "t_relay_to_tcp", "t_relay_to_tls", "forward", "forward_udp", "forward_tcp":
		if strings.HasPrefix(st.call, "t_relay") {
			w.t.relay["t_relay"] = true
		} else {
			w.t.relay["forward"] = true
		}
		for _, i := range w.pending {
			if w.t.routes[i].failure == "" {
				w.t.routes[i].failure = w.failure
			}
		}
		// The relay takes the armed failure_route with it.
		w.pending, w.failure = nil, ""
	case "sl_send_reply", "send_reply", "t_reply", "sl_reply_error":
		// Local replies are not routes; the proxy answers 404 when no
		// route matches and 503 when a set has nothing active.
	}
	return false
}

// noDestination notes a script's own reply when a set has nothing active.
func (w *walker) noDestination(call stmt, branch []stmt) {
	for _, st := range branch {
		if st.kind == 'c' && (st.call == "sl_send_reply" || st.call == "send_reply" || st.call == "t_reply") && len(st.args) > 0 && st.args[0].text != "503" {
			w.t.r.add(st.pos, false, st.call+"(\""+st.args[0].text+"\") when "+call.call+" finds nothing",
				"sipdispatch answers 503 with Retry-After when a set has no active destination")
		}
	}
}

// blockRoute walks a called route: a return ends only the route.
func (w *walker) blockRoute(body []stmt, conds []cond, name string) bool {
	for i, st := range body {
		if st.kind == 'o' && st.text == "return" {
			return false
		}
		if st.kind == 'i' && endsWithReturn(st.then) && len(st.els) == 0 {
			// if (c) return; — the rest of the route runs under !c, and
			// the caller goes on when c holds.
			w.blockRoute(body[i+1:], append(conds[:len(conds):len(conds)], cond{toks: st.cond, neg: true}), name)
			return false
		}
		if w.block([]stmt{st}, conds, name) {
			return true
		}
	}
	return false
}

func endsWithReturn(b []stmt) bool {
	return len(b) > 0 && b[len(b)-1].kind == 'o' && b[len(b)-1].text == "return"
}

// dsCall finds a ds_select_* call inside an if condition.
func dsCall(toks []token) (stmt, bool) {
	for i, x := range toks {
		if x.kind == 'i' && (x.text == "ds_select_dst" || x.text == "ds_select_domain" || x.text == "ds_select") &&
			i+1 < len(toks) && toks[i+1].text == "(" {
			p := &parser{toks: toks, i: i + 1}
			st := stmt{pos: x.pos, kind: 'c', call: x.text}
			for _, a := range p.balanced() {
				if !(a.kind == 'p' && a.text == ",") {
					st.args = append(st.args, a)
				}
			}
			return st, true
		}
	}
	return stmt{}, false
}

// valueTemplate turns an assignment's right side into a template: variables
// and strings concatenated ('+' dropped).
func valueTemplate(toks []token) string {
	var b strings.Builder
	for _, x := range toks {
		if x.kind == 'p' && x.text == "+" {
			continue
		}
		b.WriteString(x.text)
	}
	return b.String()
}

// site translates one ds_select_* call into a route.
func (w *walker) site(st stmt, conds []cond, rname string) {
	what := st.call + "(" + joinArgs(st.args) + ")"
	if st.call == "ds_select" {
		w.t.r.add(st.pos, false, what, "ds_select only fills the selection for the script; sipdispatch has no script step to translate it to")
		return
	}
	nums := make([]int, 0, 3)
	for _, a := range st.args {
		n, err := strconv.Atoi(strings.TrimSpace(a.text))
		if err != nil || a.kind == 'i' {
			w.t.r.add(st.pos, false, what, fmt.Sprintf("argument %q is not a number: set, algorithm and limit must be constants", a.text))
			return
		}
		nums = append(nums, n)
	}
	if len(nums) < 2 {
		w.t.r.add(st.pos, false, what, "needs a set and an algorithm")
		return
	}
	d := &sip.DispatchConfig{Set: nums[0], Alg: nums[1]}
	if st.call == "ds_select_domain" {
		d.Mode = "domain"
	}
	if len(nums) > 2 {
		d.Limit = nums[2]
	}
	rc := sip.RouteConfig{Name: w.t.routeName(rname), Dispatch: d}
	var missed, held []string
	for _, c := range conds {
		if !c.neg {
			held = append(held, condText(c.toks))
		}
	}
	for _, c := range conds {
		if c.neg && w.t.impliedByOrder(condText(c.toks), held) {
			continue
		}
		if why := applyCond(&rc.Match, c); why != "" {
			missed = append(missed, why)
		}
	}
	w.t.routes = append(w.t.routes, route{cfg: rc, pos: st.pos, failure: w.failure, conds: held})
	idx := len(w.t.routes) - 1
	w.pending = append(w.pending, idx)
	w.t.r.add(st.pos, true, what, fmt.Sprintf("routes[%d] %q: dispatch set %d alg %d%s", idx, rc.Name, d.Set, d.Alg, matchText(rc.Match)))
	for _, m := range missed {
		w.t.r.add(st.pos, false, "condition of "+what, m+": the route matches more requests than Kamailio's branch")
	}
	if d.Alg == 7 && !w.t.hashVarsDone {
		w.t.hashVarsDone = true
		w.t.hashVars(st.pos)
	}
}

func (t *translator) routeName(rname string) string {
	n := strings.ToLower(rname)
	t.names[n]++
	if t.names[n] > 1 {
		n = fmt.Sprintf("%s-%d", n, t.names[n])
	}
	return n
}

func joinArgs(args []token) string {
	var parts []string
	for _, a := range args {
		if a.kind == 's' {
			parts = append(parts, strconv.Quote(a.text))
		} else {
			parts = append(parts, a.text)
		}
	}
	return strings.Join(parts, ", ")
}

func matchText(m sip.MatchConfig) string {
	out, _ := yaml.Marshal(m)
	s := strings.TrimSpace(string(out))
	if s == "{}" {
		return ""
	}
	return ", match " + strings.ReplaceAll(s, "\n", "; ")
}

// proxyOwned are script steps the proxy does itself: conditions on them do
// not restrict which initial requests a route sees.
var proxyOwned = map[string]bool{
	"has_totag": true, "loose_route": true, "t_check_trans": true, "t_precheck_trans": true,
	"mf_process_maxfwd_header": true, "sanity_check": true, "t_newtran": true, "record_route": true,
}

// inDialogMethods are methods whose negated is_method guards only keep
// requests the proxy handles itself away from routing.
var inDialogMethods = map[string]bool{"ACK": true, "CANCEL": true, "BYE": true, "PRACK": true}

// applyCond adds c to m, or says why it cannot.
func applyCond(m *sip.MatchConfig, c cond) string {
	toks := c.toks
	text := condText(toks)
	for len(toks) > 0 && toks[0].kind == 'p' && toks[0].text == "!" {
		c.neg = !c.neg
		toks = toks[1:]
	}
	for len(toks) > 1 && toks[0].text == "(" && toks[len(toks)-1].text == ")" {
		toks = toks[1 : len(toks)-1]
	}
	if parts := splitAnd(toks); len(parts) > 1 {
		if c.neg {
			// !(... && uri == myself): requests to the proxy itself
			// (keepalive OPTIONS), which it answers without a route.
			if isProxyOwnedCall(toks) || strings.Contains(text, "uri == myself") {
				return ""
			}
			return fmt.Sprintf("condition not (%s)", text)
		}
		for _, part := range parts {
			if why := applyCond(m, cond{toks: part}); why != "" {
				return why
			}
		}
		return ""
	}
	for _, x := range toks {
		if x.kind == 'p' && x.text == "||" || x.kind == 'i' && x.text == "or" {
			if isProxyOwnedCall(toks) {
				return ""
			}
			return fmt.Sprintf("condition %s%s (with or)", negText(c.neg), text)
		}
	}
	if len(toks) == 0 {
		return ""
	}
	fn := toks[0].text
	var args []string
	if len(toks) > 2 && toks[1].text == "(" && toks[len(toks)-1].text == ")" {
		for _, a := range toks[2 : len(toks)-1] {
			if a.text != "," {
				args = append(args, a.text)
			}
		}
	}
	if proxyOwned[fn] {
		return ""
	}
	switch {
	case fn == "is_method" && len(args) == 1:
		methods := strings.Split(strings.ToUpper(args[0]), "|")
		if c.neg {
			for _, x := range methods {
				if !inDialogMethods[x] {
					return fmt.Sprintf("condition !is_method(%q)", args[0])
				}
			}
			return ""
		}
		if m.Methods != nil {
			return fmt.Sprintf("condition is_method(%q): a second method condition", args[0])
		}
		m.Methods = methods
		return ""
	case fn == "ds_is_from_list" && !c.neg && len(args) <= 2:
		if len(args) == 0 {
			m.FromSet = sip.AnySet()
			return ""
		}
		id, err := strconv.Atoi(args[0])
		if err != nil {
			return "condition " + text
		}
		m.FromSet = sip.SetID(id)
		if len(args) == 2 {
			mode, err := strconv.Atoi(args[1])
			if err != nil {
				return "condition " + text
			}
			m.FromSetMode = &mode
		}
		return ""
	case fn == "is_present_hf" && !c.neg && len(args) == 1 && m.Header == nil:
		m.Header = &sip.HeaderMatch{Name: args[0]}
		return ""
	}
	// VAR OP VALUE
	if len(toks) == 3 && toks[1].kind == 'p' {
		v, op, val := toks[0].text, toks[1].text, toks[2]
		if v == "$rU" && val.text == "$null" && (op == "==" && c.neg || op == "!=" && !c.neg) {
			if m.RURIUser == "" {
				m.RURIUser = "."
				return ""
			}
		}
		if !c.neg && (op == "=~" || op == "==") && val.kind == 's' {
			re := val.text
			if op == "==" {
				re = "^" + regexp.QuoteMeta(re) + "$"
			}
			var field *string
			switch v {
			case "$rU":
				field = &m.RURIUser
			case "$rd":
				field = &m.RURIDomain
			case "$fu":
				field = &m.FromURI
			case "$tu":
				field = &m.ToURI
			case "$si", "src_ip":
				if op == "==" {
					m.Source = val.text
					return ""
				}
			case "$rm", "method":
				if op == "==" && m.Methods == nil {
					m.Methods = []string{strings.ToUpper(val.text)}
					return ""
				}
			}
			if h, ok := strings.CutPrefix(v, "$hdr("); ok && m.Header == nil {
				m.Header = &sip.HeaderMatch{Name: strings.TrimSuffix(h, ")"), Regex: re}
				return ""
			}
			if field != nil && *field == "" {
				*field = re
				return ""
			}
		}
		if (v == "$si" || v == "src_ip") && op == "==" && !c.neg && m.Source == "" {
			m.Source = val.text
			return ""
		}
	}
	return fmt.Sprintf("condition %s%s", negText(c.neg), text)
}

func isProxyOwnedCall(toks []token) bool {
	for _, x := range toks {
		if x.kind == 'i' && !proxyOwned[x.text] && x.text != "and" && x.text != "or" {
			return false
		}
	}
	return true
}

func negText(neg bool) string {
	if neg {
		return "not "
	}
	return ""
}

func splitAnd(toks []token) [][]token {
	var out [][]token
	depth, start := 0, 0
	for i, x := range toks {
		switch {
		case x.text == "(":
			depth++
		case x.text == ")":
			depth--
		case depth == 0 && (x.kind == 'p' && x.text == "&&" || x.kind == 'i' && x.text == "and"):
			out = append(out, toks[start:i])
			start = i + 1
		}
	}
	return append(out, toks[start:])
}

func condText(toks []token) string {
	var b strings.Builder
	for i, x := range toks {
		if i > 0 && x.text != ")" && x.text != "," && x.text != "(" && toks[i-1].text != "(" && toks[i-1].text != "!" {
			b.WriteByte(' ')
		}
		if x.kind == 's' {
			b.WriteString(strconv.Quote(x.text))
		} else {
			b.WriteString(x.text)
		}
	}
	return b.String()
}

// hashVars declares the $avp/$var variables hash_pvar reads from the
// script's assignments to them.
func (t *translator) hashVars(at pos) {
	var pvar string
	for _, d := range t.disp {
		if d.key == "hash_pvar" {
			pvar, _ = d.val.(string)
		}
	}
	vars := map[string]string{}
	for _, name := range regexp.MustCompile(`\$\(?(avp|var)\([^)]*\)`).FindAllString(pvar, -1) {
		name = "$" + strings.TrimPrefix(strings.TrimPrefix(name, "$"), "(")
		v, ok := t.vars[name]
		if !ok {
			t.r.add(at, false, "hash_pvar variable "+name, "no assignment to it found before ds_select_dst: declare it in dispatcher.hash_pvar_vars by hand")
			continue
		}
		vars[name] = v
		t.r.add(t.varPos[name], true, name+" = "+v, "dispatcher.hash_pvar_vars")
	}
	if len(vars) > 0 {
		t.disp = append(t.disp, kv{"hash_pvar_vars", vars, at})
	}
}

// failureRoute reads the failure_route a route arms: the codes that lead to
// ds_next_dst/ds_next_domain become failover.on, ds_mark_dst its mark.
func (t *translator) failureRoute(r *route) {
	if r.cfg.Dispatch == nil {
		return
	}
	if r.failure == "" {
		if t.relay["t_relay"] {
			r.cfg.Dispatch.Failover.On = []string{}
			t.r.add(r.pos, true, "no t_on_failure", fmt.Sprintf("routes %q: failover.on: [] (no failure_route: Kamailio does not try another gateway)", r.cfg.Name))
		}
		return
	}
	body, ok := t.s.routes["failure:"+r.failure]
	if !ok {
		t.r.add(r.pos, false, "t_on_failure(\""+r.failure+"\")", "no such failure_route")
		return
	}
	f := &failureWalk{t: t}
	f.block(body, nil, 0)
	what := "failure_route[" + r.failure + "]"
	at := t.s.routePos["failure:"+r.failure]
	if !f.next {
		r.cfg.Dispatch.Failover.On = []string{}
		t.r.add(at, true, what, fmt.Sprintf("routes %q: failover.on: [] (no ds_next_dst/ds_next_domain)", r.cfg.Name))
	} else {
		on := f.codes()
		r.cfg.Dispatch.Failover.On = on
		t.r.add(f.nextPos, true, what+" ds_next_*", fmt.Sprintf("routes %q: failover.on: %v", r.cfg.Name, on))
		if t.flags&2 == 0 {
			t.r.add(f.nextPos, false, what+" ds_next_*", "dispatcher flags lack bit 2 (failover list): neither Kamailio nor sipdispatch has a next gateway")
		}
	}
	if f.mark != "" {
		r.cfg.Dispatch.Failover.Mark = f.mark
		t.r.add(f.markPos, true, "ds_mark_dst", fmt.Sprintf("routes %q: failover.mark: %s", r.cfg.Name, f.mark))
	}
	for _, n := range f.notes {
		t.r.add(n.p, false, n.what, n.why)
	}
}

type failureWalk struct {
	t         *translator
	next      bool
	nextPos   pos
	nextConds string   // the conditions around ds_next_*
	statuses  []string // t_check_status regexes on the way to ds_next_*
	timeout   bool
	any       bool     // a ds_next_* not guarded by a status condition
	excluded  []string // t_check_status regexes of exit guards seen so far
	// nextExcluded are the exit guards before ds_next_*: their codes are
	// not retried.
	nextExcluded []string
	mark         string
	markPos      pos
	notes        []struct {
		p         pos
		what, why string
	}
}

func (f *failureWalk) block(body []stmt, conds [][]token, depth int) {
	for _, st := range body {
		switch st.kind {
		case 'b':
			f.block(st.then, conds, depth)
		case 'i':
			// if (ds_next_dst()) { ... }: the call in the condition.
			for i, x := range st.cond {
				if x.kind == 'i' && i+1 < len(st.cond) && st.cond[i+1].text == "(" &&
					(x.text == "ds_next_dst" || x.text == "ds_next_domain" || x.text == "ds_mark_dst") {
					p := &parser{toks: st.cond, i: i + 1}
					c := stmt{pos: x.pos, kind: 'c', call: x.text}
					for _, a := range p.balanced() {
						if a.text != "," {
							c.args = append(c.args, a)
						}
					}
					f.block([]stmt{c}, conds, depth)
				}
			}
			f.block(st.then, append(conds[:len(conds):len(conds)], st.cond), depth)
			f.block(st.els, conds, depth)
			// if (t_check_status("486")) exit; — those codes never reach
			// a later ds_next_*.
			if last := len(st.then) - 1; last >= 0 && st.then[last].kind == 'o' && st.then[last].text == "exit" &&
				len(st.els) == 0 && len(st.cond) > 2 && st.cond[0].text == "t_check_status" {
				f.excluded = append(f.excluded, st.cond[2].text)
			}
		case 'c':
			switch st.call {
			case "ds_next_dst", "ds_next_domain":
				f.next, f.nextPos, f.nextConds = true, st.pos, condsText(conds)
				f.nextExcluded = append([]string(nil), f.excluded...)
				guarded := false
				for _, c := range conds {
					for i, x := range c {
						negated := i > 0 && c[i-1].text == "!"
						if x.text == "t_check_status" && i+2 < len(c) && !negated {
							f.statuses = append(f.statuses, c[i+2].text)
							guarded = true
						}
						if x.text == "t_branch_timeout" && !negated {
							f.timeout, guarded = true, true
						}
						if (x.text == "$T_reply_code" || x.text == "$rs") && i+2 < len(c) && c[i+1].text == "==" {
							f.statuses = append(f.statuses, "^"+c[i+2].text+"$")
							guarded = true
						}
					}
				}
				if !guarded {
					f.any = true
				}
			case "ds_mark_dst":
				f.mark, f.markPos = "i", st.pos
				if len(st.args) > 0 {
					f.mark = strings.ToLower(st.args[0].text)
				}
				if condsText(conds) != f.nextConds && f.next || !f.next && len(conds) > 0 {
					f.notes = append(f.notes, struct {
						p         pos
						what, why string
					}{st.pos, "condition of ds_mark_dst", "sipdispatch marks on every failover code, not only under " + condText(conds[len(conds)-1])})
				}
			case "route":
				if len(st.args) == 1 && depth < 16 {
					f.block(f.t.s.routes["route:"+st.args[0].text], conds, depth+1)
				}
			}
		}
	}
}

func condsText(conds [][]token) string {
	var parts []string
	for _, c := range conds {
		parts = append(parts, condText(c))
	}
	return strings.Join(parts, " && ")
}

// codes turns the collected conditions into failover.on entries.
func (f *failureWalk) codes() []string {
	statuses, timeout := f.statuses, f.timeout
	if f.any {
		statuses, timeout = []string{"."}, true
	}
	matched := f.match(statuses)
	for code := range f.match(f.nextExcluded) {
		delete(matched, code)
		if code == 408 {
			timeout = false
		}
	}
	var on []string
	if timeout {
		on = append(on, "timeout")
	}
	for class := 3; class <= 6; class++ {
		all := true
		for code := class * 100; code < class*100+100; code++ {
			all = all && (matched[code] || code == 408 && timeout)
		}
		if all {
			on = append(on, fmt.Sprintf("%dxx", class))
			continue
		}
		for code := class * 100; code < class*100+100; code++ {
			if matched[code] && !(code == 408 && timeout) {
				on = append(on, strconv.Itoa(code))
			}
		}
	}
	if on == nil {
		on = []string{}
	}
	return on
}

// match lists the codes 300..699 that any of the t_check_status regexes
// matches (unanchored, as Kamailio's regexec).
func (f *failureWalk) match(res []string) map[int]bool {
	matched := map[int]bool{}
	for _, s := range res {
		re, err := regexp.Compile(s)
		if err != nil {
			f.notes = append(f.notes, struct {
				p         pos
				what, why string
			}{f.nextPos, "t_check_status(" + strconv.Quote(s) + ")", "not a regular expression Go understands"})
			continue
		}
		for code := 300; code <= 699; code++ {
			if re.MatchString(strconv.Itoa(code)) {
				matched[code] = true
			}
		}
	}
	return matched
}

// yaml writes the configuration, each key with the Kamailio line it came
// from.
func (t *translator) yaml() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(m *yaml.Node, key string, val any, p pos) error {
		v := &yaml.Node{}
		if err := v.Encode(val); err != nil {
			return err
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: key}
		if p.line > 0 {
			k.LineComment = "from " + p.String()
			if v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode {
				k.LineComment = ""
				k.HeadComment = "from " + p.String()
			}
		}
		m.Content = append(m.Content, k, v)
		return nil
	}
	if len(t.listen) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, l := range t.listen {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: l.val.(string), LineComment: "from " + l.pos.String()})
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "listen"}, seq)
	}
	if t.advertise != nil {
		if err := add(root, "advertise", t.advertise.val, t.advertise.pos); err != nil {
			return nil, err
		}
	}
	for _, sec := range []struct {
		name string
		kvs  []kv
	}{{"proxy", t.proxy}, {"dispatcher", t.disp}} {
		if len(sec.kvs) == 0 {
			continue
		}
		m := &yaml.Node{Kind: yaml.MappingNode}
		for _, x := range sec.kvs {
			if err := add(m, x.key, x.val, x.pos); err != nil {
				return nil, err
			}
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: sec.name}, m)
	}
	if len(t.routes) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range t.routes {
			n := &yaml.Node{}
			if err := n.Encode(r.cfg); err != nil {
				return nil, err
			}
			n.HeadComment = "from " + r.pos.String()
			seq.Content = append(seq.Content, n)
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "routes"}, seq)
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root},
		HeadComment: "sipdispatch configuration written by `sipdispatch import-kamailio`; check it with `sipdispatch check -config FILE`."}
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}
