package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/testwait"
)

// runMainEnv makes the test binary run the CLI instead of the tests, so a
// test can start `sipdispatch serve` as a process of its own (its CPU use,
// which the procs governor reads, is then the node's alone).
const runMainEnv = "SIPDISPATCH_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// A node with node.procs: auto (the default) on a machine with 2+ CPUs:
// idle, the governor drops it to one P; under a burst of SIP OPTIONS from
// this test it gets all its Ps back. GOMAXPROCS is read from the node's
// /metrics (go_sched_gomaxprocs_threads); SIGTERM then ends serve cleanly.
func TestServeProcsGovernor(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skipf("this machine has %d CPU: a node starts with one P and the governor does not run; nothing to prove", runtime.NumCPU())
	}
	dir := t.TempDir()
	sipPort, apiPort := freeUDPPort(t), closedPort(t)
	list := filepath.Join(dir, "dispatcher.list")
	if err := os.WriteFile(list, []byte(fmt.Sprintf("1 sip:127.0.0.1:%d\n", closedPort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("node: {name: procs, data_dir: %s, procs: auto}\nlisten: [udp:127.0.0.1:%d]\n"+
		"api: {listen: \"127.0.0.1:%d\"}\ndispatcher: {list_file: %s}\n", filepath.Join(dir, "data"), sipPort, apiPort, list))

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "serve", "-config", cfg)
	// The node's own default GOMAXPROCS: an inherited GOMAXPROCS would turn
	// the governor off.
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOMAXPROCS=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, runMainEnv+"=1")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})

	// A scrape costs the node CPU (more so in a race build): scraped at
	// testwait's pace it alone keeps the node above procs.Down. At most two
	// scrapes a second; in between the last value stands.
	var last time.Time
	lastN := -1
	procs := func() int {
		if time.Since(last) < 500*time.Millisecond {
			return lastN
		}
		last = time.Now()
		n, err := scrapeGauge(fmt.Sprintf("http://127.0.0.1:%d/metrics", apiPort), "go_sched_gomaxprocs_threads")
		if err != nil {
			n = -1
		}
		lastN = n
		return n
	}
	testwait.For(t, "the node's /metrics", 30*time.Second, func() bool { return procs() > 0 })
	testwait.For(t, "the idle node to drop to 1 P", 30*time.Second, func() bool { return procs() == 1 })

	// A burst of OPTIONS to the node itself (each a new transaction, each
	// answered 200 by the node), in batches between scrapes, until the
	// node is back on all its Ps; bounded by the wait's deadline and a cap
	// on the datagrams sent.
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", sipPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn) // the 200s; ends when conn closes
	const maxSent = 500_000
	sent, sendErrs, start := 0, 0, time.Now()
	testwait.For(t, fmt.Sprintf("the node to get %d Ps back under SIP load", runtime.NumCPU()), 30*time.Second, func() bool {
		for range 200 {
			if sent >= maxSent {
				break
			}
			sent++
			if _, err := conn.Write(optionsTo(sipPort, conn.LocalAddr().(*net.UDPAddr).Port, sent)); err != nil {
				sendErrs++ // ECONNREFUSED from an earlier ICMP: the next write goes
			}
		}
		return procs() >= 2
	})
	t.Logf("back on %d Ps after %d OPTIONS (%d failed sends) in %v", lastN, sent, sendErrs, time.Since(start).Round(time.Millisecond))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("serve ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of SIGTERM")
	}
}

// optionsTo is an OPTIONS to the proxy at port itself, sent from fromPort;
// i makes its Call-ID and branch new.
func optionsTo(port, fromPort, i int) []byte {
	return []byte(fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-procs-%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:probe@127.0.0.1>;tag=procs\r\n"+
		"To: <sip:127.0.0.1:%d>\r\n"+
		"Call-ID: procs-%d@127.0.0.1\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"Content-Length: 0\r\n\r\n", port, fromPort, i, port, i))
}

// scrapeGauge reads one unlabelled series from a Prometheus text page.
func scrapeGauge(url, name string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s not in %s", name, url)
}

// freeUDPPort is a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
