package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Whatever `sipdispatch check` accepts, `serve` starts; whatever check
// refuses, serve refuses too, and before it touches node.data_dir. Each config
// is a variation of one base on its own 127.0.0.x address; %IP%, %PORT% and
// %API% are filled in.
func TestCheckAcceptsIffServeStarts(t *testing.T) {
	const base = `node: {name: n1, data_dir: ./data%NODE%}
listen: [%LISTEN%]
api: {listen: "%API%"}
log: {level: warn}
proxy: {%PROXY%}
dispatcher: {list_file: dispatcher.list%DISPATCHER%}
%EXTRA%`
	cases := []struct {
		name                             string
		listen, proxy, dispatcher, extra string
		node                             string // more node keys, after ", "
	}{
		// listen entries as docs/configuration.md allows them
		{name: "no port", listen: "udp:%IP%"},
		{name: "no port udp and tcp", listen: "udp:%IP%, tcp:%IP%"},
		{name: "upper-case proto", listen: "UDP:%IP%:%PORT%"},
		{name: "port", listen: "udp:%IP%:%PORT%, tcp:%IP%:%PORT%"},
		{name: "stateless readers", listen: "udp:%IP%:%PORT%", proxy: "mode: stateless, udp_readers: 3"},
		{name: "advertise", listen: "udp:%IP%:%PORT%", extra: "advertise: edge.example.com:5099"},
		{name: "probing", listen: "udp:%IP%:%PORT%", dispatcher: ", ds_ping_interval: 5"},
		// refused
		{name: "host name", listen: "udp:localhost:%PORT%"},
		{name: "unbracketed ipv6", listen: "udp:::1:%PORT%"},
		{name: "listed twice", listen: "udp:%IP%:5060, UDP:%IP%"},
		{name: "tls without cert", listen: "tls:%IP%:%PORT%"},
		{name: "tls cert without key", listen: "udp:%IP%:%PORT%", proxy: "tls_cert: c.pem"},
		{name: "bad port", listen: "udp:%IP%:65536"},
		{name: "bad mode", listen: "udp:%IP%:%PORT%", proxy: "mode: fast"},
		{name: "max_forwards 0", listen: "udp:%IP%:%PORT%", proxy: "max_forwards: 0"},
		{name: "fr_timer 0", listen: "udp:%IP%:%PORT%", proxy: "fr_timer: 0s"},
		{name: "udp_readers", listen: "udp:%IP%:%PORT%", proxy: "udp_readers: 65"},
		{name: "wildcard without advertise", listen: "udp:0.0.0.0:%PORT%"},
		{name: "bad advertise", listen: "udp:%IP%:%PORT%", extra: "advertise: h:0"},
		// node.procs: the governor or a fixed GOMAXPROCS
		{name: "procs auto", listen: "udp:%IP%:%PORT%", node: ", procs: auto"},
		{name: "procs fixed", listen: "udp:%IP%:%PORT%", node: ", procs: 3"},
		{name: "procs 0", listen: "udp:%IP%:%PORT%", node: ", procs: 0"},
		{name: "procs word", listen: "udp:%IP%:%PORT%", node: ", procs: all"},
		{name: "missing gossip key", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\", encrypt_key_file: none.key}, raft: {bind: \"%IP%:%PORT3%\"}}"},
		// cluster keys: cluster.Config.Validate owns them for check and serve alike
		{name: "cluster of one", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%:%PORT3%\", commit_timeout: 5ms}}"},
		{name: "cluster waiting for peers", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%:%PORT3%\", bootstrap_expect: 3}}"},
		{name: "commit_timeout 2s", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%:%PORT3%\", commit_timeout: 2s}}"},
		{name: "raft bind without port", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%\"}}"},
		{name: "raft tls cert without key", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%:%PORT3%\", tls: {cert: n1.crt}}}"},
		{name: "bootstrap_expect above the voters", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"%IP%:%PORT3%\", bootstrap_expect: 6}}"},
		{name: "wildcard raft bind", listen: "udp:%IP%:%PORT%",
			extra: "cluster: {enabled: true, gossip: {bind: \"%IP%:%PORT2%\"}, raft: {bind: \"0.0.0.0:%PORT3%\"}}"},
	}
	accepted := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ip := nextIP()
			dir := t.TempDir()
			api := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
			r := strings.NewReplacer("%IP%", ip, "%PORT%", fmt.Sprint(freePort(t, ip)),
				"%PORT2%", fmt.Sprint(freePort(t, ip)), "%PORT3%", fmt.Sprint(freePort(t, ip)), "%API%", api)
			cfg := strings.NewReplacer("%LISTEN%", r.Replace(tc.listen), "%PROXY%", tc.proxy, "%NODE%", tc.node,
				"%DISPATCHER%", tc.dispatcher, "%EXTRA%", r.Replace(tc.extra)).Replace(r.Replace(base))
			path := filepath.Join(dir, "sipdispatch.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "dispatcher.list"), []byte("1 sip:127.0.0.1:5999\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			check, checkErr := exec.Command(binary, "check", "-config", path).CombinedOutput()

			var log bytes.Buffer
			serve := exec.Command(binary, "serve", "-config", path)
			serve.Dir = dir
			serve.Stdout, serve.Stderr = &log, &log
			if err := serve.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = serve.Wait(); close(exited) }()
			defer func() {
				serve.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					serve.Process.Kill()
					<-exited
				}
			}()

			if checkErr != nil {
				select {
				case <-exited:
					if waitErr == nil {
						t.Fatalf("check refused the config but serve exited 0:\n%s\ncheck:\n%s", log.String(), check)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("check refused the config, serve is still running:\ncheck:\n%s", check)
				}
				if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
					t.Errorf("serve refused the config after creating node.data_dir:\n%s", log.String())
				}
				lines := strings.Split(strings.TrimSpace(string(check)), "\n")
				t.Logf("both refuse it: %s", lines[len(lines)-1])
				return
			}
			accepted++
			deadline := time.Now().Add(20 * time.Second)
			for {
				select {
				case <-exited:
					t.Fatalf("check accepted the config but serve exited (%v):\n%s\nconfig:\n%s", waitErr, log.String(), cfg)
				default:
				}
				if resp, err := http.Get("http://" + api + "/healthz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("serve did not answer /healthz within 20 s:\n%s", log.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	if accepted == 0 {
		t.Fatal("no config was accepted: the test checks nothing")
	}
}
