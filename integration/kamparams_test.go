package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRouteFallThroughNode is Kamailio's `if (!ds_select_dst(1, 4))
// ds_select_dst(2, 4)` through the sipdispatch binary: with set 1 inactive
// the route's on_empty: next hands INVITEs to the backup route (set 2);
// once set 1 is active again it takes them back.
func TestRouteFallThroughNode(t *testing.T) {
	ip := nextIP()
	primary, backup := startGateway(t, ip, answer200), startGateway(t, ip, answer200)
	n := startNode(t, nodeYAML("stateful", "", `- name: primary
  dispatch: {set: 1, alg: 4, on_empty: next}
- name: backup
  dispatch: {set: 2, alg: 4}`), listFile(1, primary)+listFile(2, backup))
	rpc(t, n, nil, "dispatcher.set_state", "i", 1, "all")
	if r := sendRaw(t, n.SIPAddr, invite("fall-1", "70")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("set 1 inactive: got %q, want 200 from the backup", firstLine(r))
	}
	if primary.Calls() != 0 || backup.Calls() != 1 {
		t.Fatalf("calls primary %d backup %d, want 0 1", primary.Calls(), backup.Calls())
	}
	rpc(t, n, nil, "dispatcher.set_state", "a", 1, "all")
	if r := sendRaw(t, n.SIPAddr, invite("fall-2", "70")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("set 1 active: got %q, want 200", firstLine(r))
	}
	if primary.Calls() != 1 || backup.Calls() != 1 {
		t.Fatalf("calls primary %d backup %d, want 1 1", primary.Calls(), backup.Calls())
	}
}

// TestServeRefusesForeignSocket: serve does not start when a destination's
// socket attribute names none of its listeners, and says which line.
func TestServeRefusesForeignSocket(t *testing.T) {
	dir := t.TempDir()
	ip := nextIP()
	cfg := "listen: [udp:" + ip + ":5060]\napi: {listen: \"" + ip + ":9060\"}\nnode: {data_dir: ./data}\n"
	list := "1 sip:" + ip + ":7070\n1 sip:" + ip + ":7072 0 0 socket=udp:" + ip + ":5099\n"
	for name, body := range map[string]string{"sipdispatch.yaml": cfg, "dispatcher.list": list} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Bounded: a serve that wrongly starts must not hang the test.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "serve", "-config", filepath.Join(dir, "sipdispatch.yaml"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve started:\n%s", out)
	}
	if want := `dispatcher.list:2: socket "udp:` + ip + `:5099": not one of the listen sockets`; !strings.Contains(string(out), want) {
		t.Fatalf("serve output lacks %q:\n%s", want, out)
	}
}
