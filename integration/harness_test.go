package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binary is the sipdispatch binary built once for the whole test run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sipdispatch-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sipdispatch")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/sipdispatch")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sipdispatch:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// nextIP hands out distinct loopback addresses so that tests and leftover
// sockets never collide: 127.N.0.10 to 127.N.0.249, where N (1..250) comes
// from this process's id. An iptables rule of one test process matches
// addresses, not processes, so two test runs on one machine (two work
// trees, or a chaos run beside `make test`) must not share addresses.
var (
	addrNet = 1 + os.Getpid()%250
	addrSeq atomic.Int32
)

func nextIP() string { return fmt.Sprintf("127.%d.0.%d", addrNet, 10+addrSeq.Add(1)%240) }

// freePort returns a port free on ip for both UDP and TCP at the time of the
// call. It is taken below the kernel's ephemeral range, where nothing binds
// unasked: a port from bind(0), once closed, may be handed to the next bind(0)
// or outgoing connection before the node binds it (one CI run lost a node's
// API port so). portSeq hands each port out once per process; the bind check
// skips one something else holds.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	var err error
	for i := 0; i < 500; i++ {
		addr := fmt.Sprintf("%s:%d", ip, portLo+int(portSeq.Add(1))%portSpan)
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			continue
		}
		pc.Close()
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			l.Close()
			return l.Addr().(*net.TCPAddr).Port
		}
	}
	t.Fatalf("no free port on %s: the last try said %v", ip, err)
	return 0
}

// portLo and portSpan bound freePort's ports: from 10000 up to the start of
// the ephemeral range. portSeq starts at an offset from this process's id so
// that two test processes rarely try the same ports.
var (
	portLo, portSpan = portRange()
	portSeq          atomic.Int32
)

func init() { portSeq.Store(int32(os.Getpid() * 97 % portSpan)) }

func portRange() (lo, span int) {
	lo, ephemeral := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lo+1000 {
				ephemeral = n
			}
		}
	}
	return lo, ephemeral - lo
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Node is one sipdispatch process started from the built binary.
type Node struct {
	t       *testing.T
	Dir     string
	SIPAddr string // ip:port of its UDP/TCP SIP listener
	APIAddr string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	exited  chan struct{}
	wrap    []string // command that runs the binary; nil = none
}

// startNode writes config and list into a temp dir and starts `serve`. config
// is the YAML body; %SIP% and %API% in it are replaced by the node's addresses.
func startNode(t *testing.T, config, list string) *Node {
	t.Helper()
	return startNodeAt(t, nextIP(), config, list)
}

// startNodeAt is startNode with the node's addresses on ip.
func startNodeAt(t *testing.T, ip, config, list string) *Node {
	t.Helper()
	return startNodeWrapped(t, ip, nil, config, list)
}

// startNodeWrapped is startNodeAt with the binary run by wrap, a command
// and its first arguments (privateResolvConf).
func startNodeWrapped(t *testing.T, ip string, wrap []string, config, list string) *Node {
	t.Helper()
	n := &Node{t: t, Dir: t.TempDir(), log: &bytes.Buffer{}, wrap: wrap}
	n.SIPAddr = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	n.APIAddr = fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	config = strings.NewReplacer("%SIP%", n.SIPAddr, "%API%", n.APIAddr).Replace(config)
	if err := os.WriteFile(filepath.Join(n.Dir, "sipdispatch.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "dispatcher.list"), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.SIPAddr, n.log.String())
		}
	})
	n.launch()
	return n
}

// launch starts `serve` on the config in n.Dir and waits until it answers
// OPTIONS. The process writes into the same log across restarts.
func (n *Node) launch() {
	t := n.t
	t.Helper()
	n.exited = make(chan struct{})
	args := append(append([]string(nil), n.wrap...), binary, "serve", "-config", filepath.Join(n.Dir, "sipdispatch.yaml"))
	n.cmd = exec.Command(args[0], args[1:]...)
	n.cmd.Dir = n.Dir
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		close(n.exited) // nothing to stop
		t.Fatal(err)
	}
	cmd, exited := n.cmd, n.exited
	go func() { cmd.Wait(); close(exited) }()
	waitFor(t, "node "+n.SIPAddr+" to answer OPTIONS", 20*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("node exited during start-up:\n%s", n.log.String())
		default:
		}
		return sipPing(n.SIPAddr) == 200
	})
}

// Kill ends the node with SIGKILL, as a crash: no shutdown path runs. It
// waits for the process to be gone.
func (n *Node) Kill() {
	n.cmd.Process.Kill()
	<-n.exited
}

// Restart starts the stopped or killed node again with the same config, list
// and data dir, on the same addresses.
func (n *Node) Restart() {
	n.t.Helper()
	<-n.exited
	n.launch()
}

// Stop ends the node with SIGTERM (SIGKILL after 10 s) and waits for it.
func (n *Node) Stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// sipPing sends one OPTIONS over UDP and returns the status code, 0 on no answer.
func sipPing(addr string) int {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	la := c.LocalAddr().(*net.UDPAddr)
	msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ping-%d;rport\r\n"+
		"From: <sip:probe@%s>;tag=p\r\nTo: <sip:%s>\r\nCall-ID: ping-%d@test\r\nCSeq: 1 OPTIONS\r\n"+
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", addr, la, time.Now().UnixNano(), la.IP, addr, time.Now().UnixNano())
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0
	}
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return 0
		}
		line, _, _ := bufio.NewReader(bytes.NewReader(buf[:k])).ReadLine()
		var code int
		if _, err := fmt.Sscanf(string(line), "SIP/2.0 %d", &code); err == nil && code >= 200 {
			return code
		}
	}
}

// sipp runs SIPp with args (bounded by timeout) and returns its exit code and
// combined output. SIPp exits 0 only when every call succeeded.
func sipp(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	code, out, err := runSIPp(t.TempDir(), timeout, args)
	if err != nil {
		t.Fatal(err)
	}
	return code, out
}

// sippRun is a SIPp run in the background (startSIPp).
type sippRun struct {
	done chan struct{}
	code int
	out  string
	err  error
}

// startSIPp starts sipp(args) in the background, for tests that act on the
// nodes while the calls are up; wait collects it.
func startSIPp(t *testing.T, timeout time.Duration, args ...string) *sippRun {
	r := &sippRun{done: make(chan struct{})}
	dir := t.TempDir()
	go func() {
		defer close(r.done)
		r.code, r.out, r.err = runSIPp(dir, timeout, args)
	}()
	return r
}

// wait waits for the run to end and returns sipp's exit code and output; a
// run that could not finish fails the test (here, on the test's goroutine).
func (r *sippRun) wait(t *testing.T) (int, string) {
	t.Helper()
	<-r.done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.code, r.out
}

// runSIPp runs SIPp in dir. err is set only when it could not run or timed
// out; a failed call is a non-zero code.
func runSIPp(dir string, timeout time.Duration, args []string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", append([]string{"-nostdin", "-timeout", fmt.Sprintf("%ds", int(timeout.Seconds())),
		"-trace_err", "-error_file", "errors.log"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if errs, _ := os.ReadFile(filepath.Join(cmd.Dir, "errors.log")); len(errs) > 0 {
		out = append(out, "\n--- sipp errors.log (tail) ---\n"+tail(string(errs), 60)...)
	}
	if ctx.Err() != nil {
		return 0, string(out), fmt.Errorf("sipp %v timed out after %v:\n%s", args, timeout, tail(string(out), 40))
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out), nil
		}
		return 0, string(out), fmt.Errorf("sipp: %w", err)
	}
	return 0, string(out), nil
}

// startSIPpGateway runs a SIPp UAS on ip:port in the background until the test ends.
func startSIPpGateway(t *testing.T, ip string, port int, proto string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "sipp", "-nostdin", "-sf", testdata("uas_gateway.xml"), "-i", ip, "-p", fmt.Sprint(port),
		"-t", proto, "-timeout", "600s", "-buff_size", "4194304")
	cmd.Dir = t.TempDir()
	out, done := startUntilCleanup(t, cmd, cancel)
	waitFor(t, fmt.Sprintf("SIPp gateway on %s:%d", ip, port), 10*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("SIPp gateway exited:\n%s", out.String())
		default:
		}
		return udpBound(ip, port)
	})
}

// udpBound reports whether something listens on ip:port/udp.
func udpBound(ip string, port int) bool {
	pc, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		return true
	}
	pc.Close()
	return false
}

func testdata(name string) string {
	p, _ := filepath.Abs(filepath.Join("testdata", name))
	return p
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// startUntilCleanup starts cmd (made with exec.CommandContext and cancel's
// context) and stops it when the test ends. Its output is in out, to read
// once done is closed (the process has exited).
func startUntilCleanup(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc) (out *bytes.Buffer, done chan struct{}) {
	t.Helper()
	out, done = new(bytes.Buffer), make(chan struct{})
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return out, done
}
