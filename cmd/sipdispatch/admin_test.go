package main

import (
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api/apitest"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

func TestAdminList(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	cfg.HashSize = 4
	cfg.PingLatencyStats = 1
	f := apitest.NewBackend(cfg, apitest.SmallNode()...)
	srv := newFakeServer(t, f, "")

	code, out, errs := runCLI("list", "-api", srv.URL)
	if code != 0 {
		t.Fatalf("list: exit %d, stderr %q", code, errs)
	}
	want := strings.Join([]string{
		"SET  URI                FLAGS  PRIORITY  LOAD  LATENCY avg/est/max ms (timeouts)  ATTRS",
		"1    sip:10.0.0.1:5060  TP     0         3     12.5/11.0/40 (2)                   duid=gw1;maxload=20;socket=udp:10.0.0.9:5060;sockname=lan;obproxy=sip:10.0.0.254",
		"1    sip:10.0.0.2       DX     0         2     0.0/0.0/0 (0)                      rweight=7",
		"3    sip:10.0.0.3       AX     0         0     0.0/0.0/0 (0)                      ",
		"",
	}, "\n")
	if out != want {
		t.Errorf("list output:\n%s\nwant:\n%s", out, want)
	}

	// --json prints the result exactly as the API sends it, key order kept.
	code, out, errs = runCLI("list", "--json", "-api", srv.URL)
	if code != 0 {
		t.Fatalf("list --json: exit %d, stderr %q", code, errs)
	}
	_, raw := apitest.Post(t, srv.URL, "", apitest.RPCBody("dispatcher.list", 1))
	var env struct{ Result json.RawMessage }
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	if d := apitest.DiffJSON("$", apitest.MustDecode(t, env.Result), apitest.MustDecode(t, []byte(out))); len(d) > 0 {
		t.Errorf("list --json differs from the API result: %v\n%s", d, out)
	}
	if !strings.HasPrefix(out, "{\n  \"NRSETS\": 2,\n  \"RECORDS\": [") {
		t.Errorf("list --json is not the indented result:\n%s", out)
	}
}

func TestAdminCommands(t *testing.T) {
	f := apitest.NewBackend(dispatch.DefaultConfig(), apitest.SmallNode()...)
	srv := newFakeServer(t, f, "")
	for _, tc := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{[]string{"reload"}, 0, "Ok. Dispatcher successfully reloaded.\n", ""},
		{[]string{"reload", "--json"}, 0, "\"Ok. Dispatcher successfully reloaded.\"\n", ""},
		{[]string{"add", "2", "sip:10.0.0.7", "8", "9", "duid=x"}, 0, "Ok. Dispatcher destination added.\n", ""},
		{[]string{"add", "2", "sip:10.0.0.8"}, 0, "Ok. Dispatcher destination added.\n", ""},
		{[]string{"add", "2", "bad:x"}, 1, "", "sipdispatch add: Adding dispatcher dst failed: add bad:x: bad URI scheme\n"},
		{[]string{"add", "2", "sip:10.0.0.9", "8", "high"}, 2, "", "PRIORITY must be an integer"},
		{[]string{"add", "2"}, 2, "", "usage: sipdispatch add [flags] SET URI [FLAGS [PRIORITY [ATTRS]]]"},
		{[]string{"add", "2", "sip:a", "0", "0", "x=1", "extra"}, 2, "", "wrong number of arguments"},
		{[]string{"remove", "3", "sip:10.0.0.3"}, 0, "Ok. Dispatcher destination removed.\n", ""},
		{[]string{"remove", "3", "sip:10.0.0.3"}, 1, "", "sipdispatch remove: Removing dispatcher dst failed: remove 3 sip:10.0.0.3: unknown destination\n"},
		{[]string{"remove", "x", "sip:10.0.0.3"}, 2, "", "SET must be an integer"},
		{[]string{"set-state", "zz", "1", "all"}, 1, "", "sipdispatch set-state: Unknown State Value\n"},
		{[]string{"set-state", "i", "1"}, 2, "", "wrong number of arguments"},
		{[]string{"set-duid-state", "i", "one", "gw1"}, 2, "", "SET must be an integer"},
		{[]string{"load", "--set", "9"}, 1, "", "sipdispatch load: Destination Group Not Found\n"},
		{[]string{"load", "--set", "1"}, 0, strings.Join([]string{
			"SET  URI                DUID  FLAGS  LOAD  MAXLOAD",
			"1    sip:10.0.0.1:5060  gw1   TP     3     20",
			"1    sip:10.0.0.2       -     DX     2     -",
			"set 1: 5 calls in progress", "load commands not committed yet on this node: 0", ""}, "\n"), ""},
		{[]string{"load", "--nosuch"}, 2, "", "flag provided but not defined: -nosuch"},
	} {
		args := append([]string{tc.args[0], "-api", srv.URL}, tc.args[1:]...)
		code, out, errs := runCLI(args...)
		if code != tc.code || out != tc.out || !strings.Contains(errs, tc.errIn) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
				tc.args, code, out, errs, tc.code, tc.out, tc.errIn)
		}
	}
	if want := []string{"2 sip:10.0.0.7 8 9 duid=x", "2 sip:10.0.0.8 0 0 "}; !slices.Equal(f.Added, want) {
		t.Errorf("backend Add calls %q, want %q", f.Added, want)
	}
	if f.Reloads != 2 {
		t.Errorf("backend Reload calls %d, want 2", f.Reloads)
	}

	// "load" without --set lists every set.
	code, out, _ := runCLI("load", "-api", srv.URL)
	if code != 0 || !strings.Contains(out, "set 1: 5 calls in progress\nset 3: 0 calls in progress\n") {
		t.Errorf("load: exit %d\n%s", code, out)
	}
}

// TestAdminSetState needs dispatch.ParseMarkState from the dispatch helper's
// branch: it passes once that lands.
func TestAdminSetState(t *testing.T) {
	f := apitest.NewBackend(dispatch.DefaultConfig(), apitest.SmallNode()...)
	srv := newFakeServer(t, f, "")
	flags := func(set, i int) string {
		f.Mu.Lock()
		defer f.Mu.Unlock()
		for _, s := range f.Sets {
			if s.ID == set {
				return s.Dests[i].State.Flags.Letters()
			}
		}
		return ""
	}
	code, out, errs := runCLI("set-state", "-api", srv.URL, "ip", "1", "sip:10.0.0.2")
	if code != 0 || out != "Ok. Dispatcher state updated.\n" {
		t.Fatalf("set-state: exit %d %q %q", code, out, errs)
	}
	if got := flags(1, 1); got != "IP" {
		t.Errorf("after set-state ip: %s", got)
	}
	if code, _, errs = runCLI("set-duid-state", "-api", srv.URL, "a", "1", "gw1"); code != 0 {
		t.Fatalf("set-duid-state: exit %d %q", code, errs)
	}
	if got := flags(1, 0); got != "AX" {
		t.Errorf("after set-duid-state a: %s", got)
	}
	if code, _, errs = runCLI("set-state", "-api", srv.URL, "d", "3", "all"); code != 0 {
		t.Fatalf("set-state all: exit %d %q", code, errs)
	}
	if got := flags(3, 0); got != "DX" {
		t.Errorf("after set-state d all: %s", got)
	}
	code, _, errs = runCLI("set-state", "-api", srv.URL, "a", "1", "sip:10.9.9.9")
	if code != 1 || errs != "sipdispatch set-state: State Update Failed\n" {
		t.Errorf("unknown destination: exit %d %q", code, errs)
	}
}

func TestAdminAuthAndEndpoint(t *testing.T) {
	f := apitest.NewBackend(dispatch.DefaultConfig(), apitest.SmallNode()...)
	srv := newFakeServer(t, f, "tok-123")
	t.Setenv(envAPI, "")
	t.Setenv(envToken, "")

	code, _, errs := runCLI("reload", "-api", srv.URL)
	if code != 1 || !strings.Contains(errs, "HTTP 401") {
		t.Errorf("no token: exit %d %q", code, errs)
	}
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI("reload", "-api", srv.URL, "-token-file", tokFile); code != 0 {
		t.Errorf("token file: exit %d %q", code, errs)
	}
	if code, _, errs := runCLI("reload", "-api", srv.URL, "-token-file", filepath.Join(dir, "none")); code != 1 || !strings.Contains(errs, "token file") {
		t.Errorf("missing token file: exit %d %q", code, errs)
	}

	// Environment: the API address without a scheme, and the token.
	t.Setenv(envAPI, strings.TrimPrefix(srv.URL, "http://"))
	t.Setenv(envToken, "tok-123")
	if code, out, errs := runCLI("reload"); code != 0 || out != "Ok. Dispatcher successfully reloaded.\n" {
		t.Errorf("from environment: exit %d %q %q", code, out, errs)
	}
	t.Setenv(envToken, "wrong")
	if code, _, _ := runCLI("reload"); code != 1 {
		t.Errorf("wrong token from environment: exit %d", code)
	}
	if f.Reloads != 2 {
		t.Errorf("backend Reload calls %d, want 2", f.Reloads)
	}

	// Nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	code, _, errs = runCLI("list", "-api", "http://"+addr)
	if code != 1 || !strings.Contains(errs, "sipdispatch list: dispatcher.list: ") {
		t.Errorf("no node: exit %d %q", code, errs)
	}
}

// newFakeServer serves f's API until the test ends.
func newFakeServer(t *testing.T, f *apitest.Backend, token string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(api.New(f, token, discardLog, nil))
	t.Cleanup(srv.Close)
	return srv
}
