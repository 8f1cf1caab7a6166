// Package api is the management API of a node: JSON-RPC 2.0 on POST /RPC
// with Kamailio's dispatcher method names and reply shapes, the cluster
// methods, bearer-token or loopback-only auth, GET /healthz and /readyz, and
// the /metrics handler it is given, and the web console at /ui/ that calls
// them from a browser (docs/operations.md). It serves a Backend
// and knows nothing of how the node is wired. Client is the other side,
// used by the admin commands.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Serve serves h on ln until ctx ends, then shuts down gracefully, giving
// calls in flight up to apiShutdownGrace to finish.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), apiShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("api %s: shutdown: %w", ln.Addr(), err)
	}
	<-errc // http.ErrServerClosed
	return nil
}

// apiShutdownGrace bounds how long Serve waits for calls in flight.
const apiShutdownGrace = 5 * time.Second

// ReadTokenFile reads an API token file: the token is the file's content
// without surrounding white space, and must not be empty.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", path)
	}
	return tok, nil
}

// Backend is what the management API needs from a running node. The API
// handlers call it from HTTP goroutines, concurrently; every method may block
// for as long as ctx allows (a set actor's reply, a raft commit).
type Backend interface {
	// Config is the dispatcher configuration; dispatcher.list reads
	// ds_hash_size and ds_ping_latency_stats from it to shape its reply.
	Config() *dispatch.Config
	// Status returns every set's destinations and runtime state.
	Status(ctx context.Context) ([]actors.SetStatus, error)
	// LoadEntries is Status with every set's call-load entries.
	LoadEntries(ctx context.Context) ([]actors.SetStatus, error)
	// LoadQueueStats counts this node's call-load commands not committed yet.
	LoadQueueStats() actors.LoadQueueStats
	// SetOrder returns the set ids in the order dispatcher.list prints
	// them, Kamailio's: the order dispatch.BuildSets gave them.
	SetOrder() []int
	// Mark applies op to destination uri of set ("all" for every one).
	Mark(ctx context.Context, set int, uri string, op dispatch.MarkOp) error
	// MarkDUID applies op to the destination with duid in set.
	MarkDUID(ctx context.Context, set int, duid string, op dispatch.MarkOp) error
	// Reload reads the destination source again and installs it.
	Reload(ctx context.Context) error
	// Add adds a destination at runtime (attrs in list-file syntax).
	Add(ctx context.Context, set int, uri string, flags dispatch.Flags, priority int, attrs string) error
	// Remove removes a destination at runtime.
	Remove(ctx context.Context, set int, uri string) error
	// PingActive reports Kamailio's ping_active state (1: keepalives on);
	// the keepalive sender owns it.
	PingActive() int
	// SetPingActive changes it and returns the previous value.
	SetPingActive(v int) (old int)
	// Ready returns nil when the node can serve traffic, else the reason.
	Ready() error
}

// maxRPCBody bounds a JSON-RPC request body; the largest legitimate request
// (dispatcher.add with attributes, or a small batch) is far below it.
const maxRPCBody = 1 << 20

// Server is the management API's HTTP handler (docs/operations.md, "HTTP endpoints").
type Server struct {
	b       Backend
	token   []byte
	log     *slog.Logger
	mux     *http.ServeMux
	methods map[string]rpcMethod
	cluster ClusterInfo // nil without cluster.enabled
	leaver  *Leaver     // nil without cluster.enabled
	probers ProbeOwners // nil without cluster.enabled
}

// New returns the management API handler: POST /RPC (JSON-RPC 2.0
// with Kamailio's dispatcher methods), GET /metrics served by metrics when
// it is not nil, the web console on GET /ui/, GET /healthz and GET /readyz. With a
// token every /RPC and /metrics call needs "Authorization: Bearer TOKEN";
// without one only loopback clients may call them. The health endpoints are
// open: orchestrator probes carry no credentials and the endpoints disclose
// no state.
func New(b Backend, token string, log *slog.Logger, metrics http.Handler) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, log: log, mux: http.NewServeMux()}
	if token != "" {
		s.token = []byte(token)
	}
	s.methods = map[string]rpcMethod{
		"dispatcher.list":           s.list,
		"dispatcher.set_state":      s.setState,
		"dispatcher.set_duid_state": s.setDUIDState,
		"dispatcher.reload":         s.reload,
		"dispatcher.add":            s.add,
		"dispatcher.remove":         s.remove,
		"dispatcher.ping_active":    s.pingActive,
		"dispatcher.hash":           s.hash,
		"dispatcher.load":           s.load,
		"cluster.members":           s.members,
		"cluster.raft":              s.raftStatus,
		"cluster.leave":             s.leave,
		"cluster.probers":           s.probeOwners,
		// Old MI names, kept by Kamailio's users' scripts.
		"ds_list":      s.list,
		"ds_set_state": s.setState,
		"ds_reload":    s.reload,
	}
	s.mux.Handle("POST /RPC", s.auth(http.HandlerFunc(s.serveRPC)))
	if metrics != nil {
		s.mux.Handle("GET /metrics", s.auth(metrics))
	}
	s.mux.Handle("GET /ui/", uiHandler())
	s.mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.b.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// auth enforces docs/operations.md, "Authentication": a bearer token when
// one is configured (compared in constant time), else a loopback client.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token != nil {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), s.token) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sipdispatch"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if !isLoopback(r.RemoteAddr) {
			s.log.Warn("api: refused non-loopback client without a token configured", "remote", r.RemoteAddr)
			http.Error(w, "forbidden: no API token configured, only loopback clients are allowed", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// obj is a JSON object that keeps its keys in insertion order: Kamailio's
// replies have a fixed key order that scripts and our fixtures rely on.
type obj []field

type field struct {
	k string
	v any
}

// MarshalJSON implements json.Marshaler.
func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.k)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", f.k, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Error is a JSON-RPC error object, as the server sends it and Client
// returns it. Code and Message follow Kamailio's
// jsonrpcs (500 and a short fixed text for method failures); Data, when set,
// carries the underlying cause where Kamailio only logs it.
type Error struct {
	Code    int
	Message string
	Data    string
}

func (e *Error) Error() string {
	if e.Data != "" {
		return e.Message + ": " + e.Data
	}
	return e.Message
}

func (e *Error) object() obj {
	o := obj{{"code", e.Code}, {"message", e.Message}}
	if e.Data != "" {
		o = append(o, field{"data", e.Data})
	}
	return o
}

// Standard JSON-RPC 2.0 errors for requests that never reach a method;
// method-level errors use Kamailio's 500 codes.
var (
	errParse          = &Error{Code: -32700, Message: "Parse Error"}
	errInvalidRequest = &Error{Code: -32600, Message: "Invalid Request"}
	errMethodNotFound = &Error{Code: 500, Message: "Method Not Found"}
	errInvalidParams  = &Error{Code: 500, Message: "Invalid Parameters"}
)

func failed(msg string, err error) *Error {
	if errors.Is(err, dispatch.ErrOngoingReload) {
		// reload_delta: Kamailio's fault for reload, add and remove alike.
		return &Error{Code: 500, Message: err.Error()}
	}
	return &Error{Code: 500, Message: msg, Data: err.Error()}
}

// rpcMethod serves one method; params are the request's positional params.
type rpcMethod func(ctx context.Context, p params) (any, *Error)

type rpcRequest struct {
	JSONRPC *string         `json:"jsonrpc"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
}

// serveRPC handles one JSON-RPC request or a batch (a JSON array).
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRPCBody))
	if err != nil {
		s.reply(w, http.StatusRequestEntityTooLarge, envelope(nil, nil, &Error{Code: -32600, Message: "Invalid Request", Data: err.Error()}))
		return
	}
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(body, &batch); err != nil {
			s.reply(w, http.StatusBadRequest, envelope(nil, nil, errParse))
			return
		}
		if len(batch) == 0 {
			s.reply(w, http.StatusBadRequest, envelope(nil, nil, errInvalidRequest))
			return
		}
		out := make([]obj, len(batch))
		for i, raw := range batch {
			out[i], _ = s.call(r.Context(), raw)
		}
		s.reply(w, http.StatusOK, out)
		return
	}
	resp, status := s.call(r.Context(), body)
	s.reply(w, status, resp)
}

// call runs one request and returns its response and the HTTP status
// Kamailio would use for it: 200, or the error code when it is an HTTP code.
func (s *Server) call(ctx context.Context, raw []byte) (obj, int) {
	var req rpcRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || len(raw) == 0 {
			return envelope(nil, nil, errParse), http.StatusBadRequest
		}
		return envelope(nil, nil, errInvalidRequest), http.StatusBadRequest
	}
	if req.JSONRPC == nil || *req.JSONRPC != "2.0" || req.Method == nil {
		return envelope(req.ID, nil, errInvalidRequest), http.StatusBadRequest
	}
	m, ok := s.methods[*req.Method]
	if !ok {
		s.log.Debug("api: unknown method", "method", *req.Method)
		return envelope(req.ID, nil, errMethodNotFound), httpStatus(errMethodNotFound)
	}
	var p params
	if len(req.Params) > 0 && !bytes.Equal(req.Params, []byte("null")) {
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return envelope(req.ID, nil, errInvalidParams), httpStatus(errInvalidParams)
		}
	}
	res, rerr := m(ctx, p)
	if rerr != nil {
		s.log.Warn("api call failed", "method", *req.Method, "code", rerr.Code, "err", rerr.Error())
		return envelope(req.ID, nil, rerr), httpStatus(rerr)
	}
	s.log.Debug("api call", "method", *req.Method)
	return envelope(req.ID, res, nil), http.StatusOK
}

// envelope builds a JSON-RPC response in Kamailio's key order; like Kamailio
// it answers a request without id (a notification) too, just without "id".
func envelope(id json.RawMessage, result any, e *Error) obj {
	o := obj{{"jsonrpc", "2.0"}}
	if e != nil {
		o = append(o, field{"error", e.object()})
	} else {
		o = append(o, field{"result", result})
	}
	if len(id) > 0 {
		o = append(o, field{"id", id})
	}
	return o
}

func httpStatus(e *Error) int {
	if e.Code >= 400 && e.Code <= 599 {
		return e.Code
	}
	return http.StatusInternalServerError
}

func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("api: encode reply", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// params are a request's positional parameters. Like Kamailio's rpc->scan,
// an integer may also be given as a numeric string and a string as a number.
type params []json.RawMessage

func (p params) has(i int) bool { return i < len(p) }

func (p params) int(i int) (int, *Error) {
	if i >= len(p) {
		return 0, errInvalidParams
	}
	var n json.Number
	if err := json.Unmarshal(p[i], &n); err != nil {
		var str string
		if json.Unmarshal(p[i], &str) != nil {
			return 0, errInvalidParams
		}
		n = json.Number(strings.TrimSpace(str))
	}
	v, err := strconv.Atoi(n.String())
	if err != nil {
		return 0, errInvalidParams
	}
	return v, nil
}

func (p params) str(i int) (string, *Error) {
	if i >= len(p) {
		return "", errInvalidParams
	}
	var str string
	if err := json.Unmarshal(p[i], &str); err == nil {
		return str, nil
	}
	var n json.Number
	if err := json.Unmarshal(p[i], &n); err == nil {
		return n.String(), nil
	}
	return "", errInvalidParams
}

// strOrNull renders an absent attribute as null, as Kamailio does.
func strOrNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// list serves dispatcher.list ["short"]: Kamailio's shape, key order and
// flag letters; "short" leaves out ATTRS.
func (s *Server) list(ctx context.Context, p params) (any, *Error) {
	short := false
	if p.has(0) {
		mode, rerr := p.str(0)
		if rerr != nil {
			return nil, rerr
		}
		short = strings.EqualFold(mode, "short")
	}
	sets, err := s.b.Status(ctx)
	if err != nil {
		return nil, failed("Internal error sets structure", err)
	}
	if len(sets) == 0 {
		return nil, &Error{Code: 500, Message: "No Destination Sets"}
	}
	cfg := s.b.Config()
	byID := make(map[int]*actors.SetStatus, len(sets))
	ids := make([]int, 0, len(sets))
	for i := range sets {
		byID[sets[i].ID] = &sets[i]
		ids = append(ids, sets[i].ID)
	}
	// Sets listed by SetOrder first, in its order; a set that a reload added
	// between the two reads goes last.
	order := slices.DeleteFunc(s.b.SetOrder(), func(id int) bool { return byID[id] == nil })
	for _, id := range ids {
		if !slices.Contains(order, id) {
			order = append(order, id)
		}
	}
	records := make([]obj, 0, len(sets))
	for _, id := range order {
		set := byID[id]
		targets := make([]obj, 0, len(set.Dests))
		for _, d := range set.Dests {
			targets = append(targets, obj{{"DEST", destObject(&d, cfg, short)}})
		}
		records = append(records, obj{{"SET", obj{{"ID", set.ID}, {"TARGETS", targets}}}})
	}
	return obj{{"NRSETS", len(sets)}, {"RECORDS", records}}, nil
}

func destObject(d *actors.DestStatus, cfg *dispatch.Config, short bool) obj {
	o := obj{{"URI", d.URI}, {"FLAGS", d.State.Flags.Letters()}, {"PRIORITY", d.Priority}}
	if a := d.Attrs; !short && a.Raw != "" {
		sockname, _ := a.Get("sockname")
		o = append(o, field{"ATTRS", obj{
			{"BODY", a.Raw},
			{"DUID", strOrNull(a.DUID)},
			{"MAXLOAD", a.MaxLoad},
			{"WEIGHT", a.Weight},
			{"RWEIGHT", a.RWeight},
			{"SOCKET", strOrNull(a.Socket)},
			{"SOCKNAME", strOrNull(sockname)},
			{"OBPROXY", strOrNull(a.OBProxy)},
		}})
	}
	if cfg.PingLatencyStats != 0 {
		l := d.State.Latency
		o = append(o, field{"LATENCY", obj{
			{"AVG", l.Avg},
			{"STD", l.Std},
			{"EST", l.Est},
			{"MAX", int64(l.Max)},
			{"TIMEOUT", l.Timeouts},
		}})
	}
	if cfg.HashSize > 0 {
		o = append(o, field{"RUNTIME", obj{{"DLGLOAD", d.State.Load}}})
	}
	return o
}

// setState serves dispatcher.set_state [STATE, SET, URI|"all"].
func (s *Server) setState(ctx context.Context, p params) (any, *Error) {
	return s.mark(ctx, p, false)
}

// setDUIDState serves dispatcher.set_duid_state [STATE, SET, DUID].
func (s *Server) setDUIDState(ctx context.Context, p params) (any, *Error) {
	return s.mark(ctx, p, true)
}

func (s *Server) mark(ctx context.Context, p params, byDUID bool) (any, *Error) {
	state, e1 := p.str(0)
	set, e2 := p.int(1)
	target, e3 := p.str(2)
	if e1 != nil || e2 != nil || e3 != nil {
		return nil, errInvalidParams
	}
	if state == "" {
		return nil, &Error{Code: 500, Message: "Invalid State Parameter"}
	}
	op, err := rpcMarkOp(state)
	if err != nil {
		return nil, &Error{Code: 500, Message: "Unknown State Value"}
	}
	if byDUID && target != "all" {
		err = s.b.MarkDUID(ctx, set, target, op)
	} else {
		err = s.b.Mark(ctx, set, target, op)
	}
	if err != nil {
		// Kamailio's reply has no detail; the cause goes to the log only.
		s.log.Warn("api: set_state", "set", set, "target", target, "state", state, "err", err)
		return nil, &Error{Code: 500, Message: "State Update Failed"}
	}
	return "Ok. Dispatcher state updated.", nil
}

// rpcMarkOp parses set_state's STATE. Kamailio's RPC sets the state as given
// (ds_reinit_state), without the failure and success thresholds that a
// failover mark goes through: hence a Direct MarkOp.
func rpcMarkOp(state string) (dispatch.MarkOp, error) {
	op, err := dispatch.ParseMarkState(state)
	op.Direct = true
	return op, err
}

// reload serves dispatcher.reload. Unlike Kamailio, destination state and
// call load carry over (docs/kamailio-compat.md, reload).
func (s *Server) reload(ctx context.Context, _ params) (any, *Error) {
	if err := s.b.Reload(ctx); err != nil {
		return nil, failed("Reload Failed", err)
	}
	return "Ok. Dispatcher successfully reloaded.", nil
}

// add serves dispatcher.add [SET, URI, FLAGS?, PRIORITY?, ATTRS?].
func (s *Server) add(ctx context.Context, p params) (any, *Error) {
	set, e1 := p.int(0)
	uri, e2 := p.str(1)
	if e1 != nil || e2 != nil || uri == "" {
		return nil, errInvalidParams
	}
	var flags, prio int
	var attrs string
	var rerr *Error
	if p.has(2) {
		if flags, rerr = p.int(2); rerr != nil || flags < 0 {
			return nil, errInvalidParams
		}
	}
	if p.has(3) {
		if prio, rerr = p.int(3); rerr != nil {
			return nil, rerr
		}
	}
	if p.has(4) {
		if attrs, rerr = p.str(4); rerr != nil {
			return nil, rerr
		}
	}
	if err := s.b.Add(ctx, set, uri, dispatch.Flags(flags), prio, attrs); err != nil {
		return nil, failed("Adding dispatcher dst failed", err)
	}
	return "Ok. Dispatcher destination added.", nil
}

// remove serves dispatcher.remove [SET, URI].
func (s *Server) remove(ctx context.Context, p params) (any, *Error) {
	set, e1 := p.int(0)
	uri, e2 := p.str(1)
	if e1 != nil || e2 != nil || uri == "" {
		return nil, errInvalidParams
	}
	if err := s.b.Remove(ctx, set, uri); err != nil {
		return nil, failed("Removing dispatcher dst failed", err)
	}
	return "Ok. Dispatcher destination removed.", nil
}

// pingActive serves dispatcher.ping_active [STATE?]: without a parameter it
// reads the state, with one it sets it.
func (s *Server) pingActive(_ context.Context, p params) (any, *Error) {
	if !p.has(0) {
		return obj{{"OldPingState", s.b.PingActive()}}, nil
	}
	v, rerr := p.int(0)
	if rerr != nil {
		return nil, rerr
	}
	if v != 0 && v != 1 {
		return nil, &Error{Code: 500, Message: "Ping State Update Failed", Data: "state must be 0 or 1"}
	}
	old := s.b.SetPingActive(v)
	return obj{{"NewPingState", v}, {"OldPingState", old}}, nil
}

// hash serves dispatcher.hash [NSLOTS, V1, V2?] with Kamailio's hash.
func (s *Server) hash(_ context.Context, p params) (any, *Error) {
	n, e1 := p.int(0)
	v1, e2 := p.str(1)
	if e1 != nil || e2 != nil {
		return nil, errInvalidParams
	}
	var v2 string
	if p.has(2) {
		var rerr *Error
		if v2, rerr = p.str(2); rerr != nil {
			return nil, rerr
		}
	}
	h := dispatch.Hash(v1, v2)
	var slot uint32
	if n > 0 {
		slot = h % uint32(n)
	}
	return obj{{"hashid", h}, {"slot", slot}}, nil
}

// load serves dispatcher.load [SET?] ["entries"?], sipdispatch's own
// method: the call load of every destination (algorithm 10), sets in
// ascending id order; with "entries", each set's entries too (Call-ID,
// destination, age, confirmed), for debugging a load that does not match
// the calls. PENDING is this node's load commands not committed yet.
func (s *Server) load(ctx context.Context, p params) (any, *Error) {
	only, all, entries := 0, true, false
	for i := range p {
		if v, rerr := p.str(i); rerr == nil && v == "entries" {
			entries = true
			continue
		}
		n, rerr := p.int(i)
		if rerr != nil || !all {
			return nil, errInvalidParams
		}
		only, all = n, false
	}
	status := s.b.Status
	if entries {
		status = s.b.LoadEntries
	}
	sets, err := status(ctx)
	if err != nil {
		return nil, failed("Internal error sets structure", err)
	}
	now := time.Now()
	out := []obj{}
	for _, set := range sets {
		if !all && set.ID != only {
			continue
		}
		targets := make([]obj, 0, len(set.Dests))
		for _, d := range set.Dests {
			targets = append(targets, obj{
				{"URI", d.URI},
				{"DUID", strOrNull(d.Attrs.DUID)},
				{"FLAGS", d.State.Flags.Letters()},
				{"LOAD", d.State.Load},
				{"MAXLOAD", d.Attrs.MaxLoad},
			})
		}
		o := obj{{"ID", set.ID}, {"CALLS", set.Calls}, {"TARGETS", targets}}
		if entries {
			list := make([]obj, 0, len(set.Entries))
			for _, e := range set.Entries {
				d := set.Dests[e.Dest]
				list = append(list, obj{
					{"CALLID", e.CallID},
					{"URI", d.URI},
					{"DUID", strOrNull(d.Attrs.DUID)},
					{"AGE", int(now.Sub(e.Since).Seconds())},
					{"CONFIRMED", e.Confirmed},
					{"EXPIRES", int(e.Expires.Sub(now).Seconds())},
				})
			}
			o = append(o, field{"ENTRIES", list})
		}
		out = append(out, o)
	}
	if !all && len(out) == 0 {
		return nil, &Error{Code: 404, Message: "Destination Group Not Found"}
	}
	return obj{{"SETS", out}, {"PENDING", s.b.LoadQueueStats().Pending}}, nil
}

// CheckListen checks the API's listen address, HOST:PORT as net.Listen
// takes it (an IPv6 host in brackets).
func CheckListen(addr string) error {
	if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
		return errors.New("IPv6 addresses go in brackets: [::1]:9060")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT: %w", err)
	}
	if host == "" {
		return errors.New("missing host (0.0.0.0 listens on every address)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q: want 1..65535", port)
	}
	return nil
}
