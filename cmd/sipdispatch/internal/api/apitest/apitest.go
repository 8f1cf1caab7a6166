// Package apitest holds what tests of the management API and of its clients
// share: an in-memory Backend, a small node's sets, and helpers to send
// requests and compare JSON with its key order.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// dest builds a destination by hand, the way the list parser would.
func Dest(set int, uri string, flags dispatch.Flags, prio int, attrs dispatch.Attrs, host string, port int, transport string) dispatch.Destination {
	return dispatch.Destination{
		SetID: set, URI: uri, Flags: flags, Priority: prio, Attrs: attrs,
		Scheme: "sip", Host: host, Port: port, Transport: transport,
	}
}

// post sends body to /RPC and returns the status and body.
func Post(t *testing.T, url, token, body string) (int, []byte) {
	t.Helper()
	return Request(t, http.MethodPost, url+"/RPC", token, strings.NewReader(body))
}

// apiRequest sends one request to the management API, with the bearer token
// when one is given, and returns the status and body.
func Request(t *testing.T, method, url, token string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// RPCBody is a JSON-RPC 2.0 request.
func RPCBody(method string, id int, params ...any) string {
	m := map[string]any{"jsonrpc": "2.0", "method": method, "id": id}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// jsonKV and jsonObj hold a decoded JSON object with its key order.
type jsonKV struct {
	K string
	V any
}
type jsonObj []jsonKV

// decodeOrdered decodes JSON keeping object key order; numbers stay
// json.Number so that 3776158421 and 0 compare exactly.
func DecodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		o := jsonObj{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, jsonKV{kt.(string), v})
		}
		_, err = dec.Token()
		return o, err
	case '[':
		a := []any{}
		for dec.More() {
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err = dec.Token()
		return a, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

// diffJSON lists every difference in keys, key order, nesting and values.
func DiffJSON(path string, want, got any) []string {
	switch w := want.(type) {
	case jsonObj:
		g, ok := got.(jsonObj)
		if !ok {
			return []string{fmt.Sprintf("%s: want object, got %T %v", path, got, got)}
		}
		wk, gk := keys(w), keys(g)
		if !slices.Equal(wk, gk) {
			return []string{fmt.Sprintf("%s: keys want %v, got %v", path, wk, gk)}
		}
		var out []string
		for i := range w {
			out = append(out, DiffJSON(path+"."+w[i].K, w[i].V, g[i].V)...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want array, got %T %v", path, got, got)}
		}
		if len(w) != len(g) {
			return []string{fmt.Sprintf("%s: want %d elements, got %d", path, len(w), len(g))}
		}
		var out []string
		for i := range w {
			out = append(out, DiffJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	default:
		if want != got {
			return []string{fmt.Sprintf("%s: want %#v, got %#v", path, want, got)}
		}
		return nil
	}
}

func keys(o jsonObj) []string {
	k := make([]string, len(o))
	for i, kv := range o {
		k[i] = kv.K
	}
	return k
}

// WithoutID drops the "id" key of a decoded object.
func WithoutID(v any) any {
	o, ok := v.(jsonObj)
	if !ok {
		return v
	}
	return slices.DeleteFunc(slices.Clone(o), func(kv jsonKV) bool { return kv.K == "id" })
}

// Backend is an in-memory api.Backend for API and CLI tests. Its marks apply
// op.Set over op.Clear directly.
type Backend struct {
	Mu        sync.Mutex // guards the fields below
	Cfg       dispatch.Config
	Sets      []actors.SetStatus
	Ping      int      // ping_active
	ReadyErr  error    // what Ready returns
	StatusErr error    // what Status returns, when not nil
	ReloadErr error    // what Reload returns
	Reloads   int      // Reload calls
	Added     []string // Add calls, "SET URI FLAGS PRIO ATTRS"
}

// NewBackend returns a fake node with sets and ping_active 1.
func NewBackend(cfg dispatch.Config, sets ...actors.SetStatus) *Backend {
	return &Backend{Cfg: cfg, Sets: sets, Ping: 1}
}

// Config implements api.Backend.
func (f *Backend) Config() *dispatch.Config { return &f.Cfg }

// LoadEntries implements api.Backend.
func (f *Backend) LoadEntries(ctx context.Context) ([]actors.SetStatus, error) {
	return f.Status(ctx)
}

// LoadQueueStats implements api.Backend.
func (f *Backend) LoadQueueStats() actors.LoadQueueStats { return actors.LoadQueueStats{} }

// SetOrder takes the fake's sets as a source lists them, in the order given,
// and orders them as dispatch.BuildSets does.
func (f *Backend) SetOrder() []int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	var dests []dispatch.Destination
	for _, s := range f.Sets {
		for _, d := range s.Dests {
			dests = append(dests, d.Destination)
		}
	}
	var ids []int
	for _, s := range dispatch.BuildSets(dests) {
		ids = append(ids, s.ID)
	}
	return ids
}

// Status implements api.Backend.
func (f *Backend) Status(context.Context) ([]actors.SetStatus, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if f.StatusErr != nil {
		return nil, f.StatusErr
	}
	out := slices.Clone(f.Sets)
	for i := range out {
		out[i].Dests = slices.Clone(out[i].Dests)
	}
	return out, nil
}

func (f *Backend) mark(set int, match func(*actors.DestStatus) bool, op dispatch.MarkOp) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	for i := range f.Sets {
		if f.Sets[i].ID != set {
			continue
		}
		n := 0
		for j := range f.Sets[i].Dests {
			if d := &f.Sets[i].Dests[j]; match(d) {
				d.State.Flags = d.State.Flags&^op.Clear | op.Set
				n++
			}
		}
		if n == 0 {
			return dispatch.ErrUnknownDestination
		}
		return nil
	}
	return dispatch.ErrUnknownSet
}

// Mark implements api.Backend.
func (f *Backend) Mark(_ context.Context, set int, uri string, op dispatch.MarkOp) error {
	return f.mark(set, func(d *actors.DestStatus) bool { return uri == "all" || d.URI == uri }, op)
}

// MarkDUID implements api.Backend.
func (f *Backend) MarkDUID(_ context.Context, set int, duid string, op dispatch.MarkOp) error {
	return f.mark(set, func(d *actors.DestStatus) bool { return d.Attrs.DUID == duid }, op)
}

// Reload implements api.Backend.
func (f *Backend) Reload(context.Context) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Reloads++
	return f.ReloadErr
}

// Add implements api.Backend.
func (f *Backend) Add(_ context.Context, set int, uri string, flags dispatch.Flags, prio int, attrs string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if strings.HasPrefix(uri, "bad:") {
		return fmt.Errorf("add %s: %w", uri, errors.New("bad URI scheme"))
	}
	f.Added = append(f.Added, fmt.Sprintf("%d %s %d %d %s", set, uri, flags, prio, attrs))
	return nil
}

// Remove implements api.Backend.
func (f *Backend) Remove(_ context.Context, set int, uri string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	for i := range f.Sets {
		if f.Sets[i].ID != set {
			continue
		}
		for j, d := range f.Sets[i].Dests {
			if d.URI == uri {
				f.Sets[i].Dests = slices.Delete(f.Sets[i].Dests, j, j+1)
				return nil
			}
		}
	}
	return fmt.Errorf("remove %d %s: %w", set, uri, dispatch.ErrUnknownDestination)
}

// PingActive implements api.Backend.
func (f *Backend) PingActive() int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.Ping
}

// SetPingActive implements api.Backend.
func (f *Backend) SetPingActive(v int) int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	old := f.Ping
	f.Ping = v
	return old
}

// Ready implements api.Backend.
func (f *Backend) Ready() error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.ReadyErr
}

// SmallNode is a small node: set 1 with two gateways carrying call load,
// set 3 with one gateway without attributes.
func SmallNode() []actors.SetStatus {
	gw1 := Dest(1, "sip:10.0.0.1:5060", 0, 0, dispatch.Attrs{
		Raw:  "duid=gw1;maxload=20;socket=udp:10.0.0.9:5060;sockname=lan;obproxy=sip:10.0.0.254",
		DUID: "gw1", MaxLoad: 20, Socket: "udp:10.0.0.9:5060", OBProxy: "sip:10.0.0.254",
		Pairs: []dispatch.Attr{{Name: "duid", Value: "gw1"}, {Name: "maxload", Value: "20"},
			{Name: "socket", Value: "udp:10.0.0.9:5060"}, {Name: "sockname", Value: "lan"}, {Name: "obproxy", Value: "sip:10.0.0.254"}},
	}, "10.0.0.1", 5060, "")
	gw2 := Dest(1, "sip:10.0.0.2", 0, 0, dispatch.Attrs{
		Raw: "rweight=7", RWeight: 7, Pairs: []dispatch.Attr{{Name: "rweight", Value: "7"}},
	}, "10.0.0.2", 0, "")
	gw3 := Dest(3, "sip:10.0.0.3", 0, 0, dispatch.Attrs{}, "10.0.0.3", 0, "")
	return []actors.SetStatus{
		{ID: 1, Calls: 5, Dests: []actors.DestStatus{
			{Destination: gw1, State: dispatch.DestState{Flags: dispatch.FlagTrying | dispatch.FlagProbing, Load: 3,
				Latency: dispatch.LatencyStats{Avg: 12.5, Std: 1.25, Est: 11, Max: 40, Timeouts: 2}}},
			{Destination: gw2, State: dispatch.DestState{Flags: dispatch.FlagDisabled, Load: 2}},
		}},
		{ID: 3, Dests: []actors.DestStatus{{Destination: gw3}}},
	}
}

// MustDecode decodes JSON with its key order and without "id".
func MustDecode(t *testing.T, b []byte) any {
	t.Helper()
	v, err := DecodeOrdered(b)
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return WithoutID(v)
}
