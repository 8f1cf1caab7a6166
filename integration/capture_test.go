package integration

import (
	"context"
	bin "encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHEPCaptureToSngrep: a node with capture.hep sends every SIP message
// of a SIPp call to sngrep 1.6 listening for HEP v3 (the receiver Homer users
// debug with), and the pcap sngrep writes holds each of them on both legs:
// INVITE, ACK and BYE caller→proxy and proxy→gateway; 180, 200 (INVITE) and
// 200 (BYE) gateway→proxy and proxy→caller, with their addresses and ports.
// Both proxy modes: stateless mode reads and answers through its own fast
// path (statelessRead, wireTx), which the capture must see as well.
func TestHEPCaptureToSngrep(t *testing.T) {
	if testing.Short() {
		t.Skip("needs sngrep and SIPp")
	}
	if _, err := exec.LookPath("sngrep"); err != nil {
		t.Fatal("sngrep is not installed (.ci/setup installs it)")
	}
	for _, tc := range []struct{ mode, callerTransport string }{
		{"stateful", "udp"}, {"stateless", "udp"}, {"stateful", "tcp"},
	} {
		t.Run(tc.mode+"-"+tc.callerTransport, func(t *testing.T) { testHEPCapture(t, tc.mode, tc.callerTransport) })
	}
}

// testHEPCapture runs the call with the caller on callerTransport (udp or
// tcp); the gateway leg is UDP. sngrep 1.6 writes every packet it got over
// HEP as UDP in its pcap, whatever the HEP transport chunk said, so the
// chunk is checked by sip/capture's tests, not here.
func testHEPCapture(t *testing.T, mode, callerTransport string) {
	ip := nextIP()
	hepPort, gwPort := freePort(t, ip), freePort(t, ip)
	pcap := filepath.Join(t.TempDir(), "out.pcap")
	startSngrep(t, fmt.Sprintf("udp:%s:%d", ip, hepPort), pcap)
	startSIPpGateway(t, ip, gwPort, "u1")
	gw := fmt.Sprintf("%s:%d", ip, gwPort)
	n := startNodeAt(t, ip, nodeYAML(mode, "", `- name: all
  dispatch: {set: 1, alg: 4}`)+fmt.Sprintf("capture: {hep: \"udp:%s:%d\", node_id: 7}\n", ip, hepPort),
		"1 sip:"+gw+" 0 0\n")

	args := callerArgs(n, 1, 1, 0)
	if callerTransport == "tcp" {
		args[slices.Index(args, "u1")] = "t1"
	}
	if code, out := sipp(t, 30*time.Second, args...); code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	// The node counts what it sent; sngrep writes each packet as it comes.
	var frames []pcapFrame
	waitFor(t, "the pcap to hold every message the node sent", 15*time.Second, func() bool {
		sent := metric(t, n, "sipdispatch_hep_sent_total")
		frames = readPcap(t, pcap)
		return sent >= 12 && float64(len(frames)) == sent
	})
	if d := metric(t, n, "sipdispatch_hep_dropped_total"); d != 0 {
		t.Errorf("sipdispatch_hep_dropped_total = %v", d)
	}

	proxy := n.SIPAddr
	type leg struct{ what, src, dst string }
	seen := map[leg]int{}
	callIDs := map[string]bool{}
	for _, f := range frames {
		start, _, _ := strings.Cut(string(f.payload), "\r\n")
		what := strings.Fields(start)[0]
		if what == "SIP/2.0" {
			what = strings.Fields(start)[1] + " " + cseqMethod(f.payload)
		}
		if what == "OPTIONS" || what == "200 OPTIONS" {
			continue // the harness's start-up pings
		}
		callIDs[headerOf(f.payload, "Call-ID")] = true
		src, dst := f.src, f.dst
		if src != proxy {
			src = "peer"
		}
		if dst != proxy {
			dst = "peer"
		}
		if f.src == gw {
			src = "gw"
		}
		if f.dst == gw {
			dst = "gw"
		}
		seen[leg{what, src, dst}]++
	}
	var missing []string
	for _, req := range []string{"INVITE", "ACK", "BYE"} {
		for _, l := range []leg{{req, "peer", proxy}, {req, proxy, "gw"}} {
			if seen[l] == 0 {
				missing = append(missing, fmt.Sprint(l))
			}
		}
	}
	for _, res := range []string{"180 INVITE", "200 INVITE", "200 BYE"} {
		for _, l := range []leg{{res, "gw", proxy}, {res, proxy, "peer"}} {
			if seen[l] == 0 {
				missing = append(missing, fmt.Sprint(l))
			}
		}
	}
	if trying := seen[leg{"100 INVITE", proxy, "peer"}]; (mode == "stateful") != (trying > 0) {
		t.Errorf("%s mode: %d 100 Trying proxy→caller in the pcap", mode, trying)
	}
	if len(missing) > 0 {
		t.Errorf("pcap lacks %v; it holds %v", missing, seen)
	}
	if len(callIDs) != 1 {
		t.Errorf("call's messages carry Call-IDs %v, want one", callIDs)
	}
}

// startSngrep runs sngrep without its interface, listening for HEP on url
// and writing what it receives to pcap, until the test ends.
func startSngrep(t *testing.T, url, pcap string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, done := startUntilCleanup(t, exec.CommandContext(ctx, "sngrep", "-N", "-q", "-L", url, "-O", pcap), cancel)
	host, port, _ := strings.Cut(strings.TrimPrefix(url, "udp:"), ":")
	var p int
	fmt.Sscan(port, &p)
	waitFor(t, "sngrep to listen on "+url, 10*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("sngrep exited:\n%s", out.String())
		default:
		}
		return udpBound(host, p)
	})
}

// pcapFrame is one packet of a pcap file: IPv4 addresses and ports as
// host:port, the IP protocol and the transport payload.
type pcapFrame struct {
	src, dst string
	proto    byte
	payload  []byte
}

// readPcap parses a classic pcap file of Ethernet frames carrying IPv4 and
// UDP or TCP, as sngrep writes what it received over HEP. A file still being
// written may end in a partial record, which is left out.
func readPcap(t *testing.T, path string) []pcapFrame {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 24 {
		return nil
	}
	var order bin.ByteOrder = bin.LittleEndian
	switch bin.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = bin.BigEndian
	default:
		t.Fatalf("%s: not a pcap file", path)
	}
	if lt := order.Uint32(b[20:]); lt != 1 {
		t.Fatalf("%s: link type %d, want 1 (Ethernet)", path, lt)
	}
	var frames []pcapFrame
	for rest := b[24:]; len(rest) >= 16; {
		caplen := int(order.Uint32(rest[8:]))
		if len(rest) < 16+caplen {
			break
		}
		pkt := rest[16 : 16+caplen]
		rest = rest[16+caplen:]
		if len(pkt) < 14+20 || bin.BigEndian.Uint16(pkt[12:]) != 0x0800 {
			t.Fatalf("frame is not Ethernet/IPv4: % x", pkt[:min(len(pkt), 34)])
		}
		ip := pkt[14:]
		ihl := int(ip[0]&0x0f) * 4
		total := int(bin.BigEndian.Uint16(ip[2:]))
		if total > len(ip) || ihl < 20 || total < ihl+8 {
			t.Fatalf("bad IPv4 header: % x", ip[:20])
		}
		f := pcapFrame{proto: ip[9]}
		l4 := ip[ihl:total]
		hdr := 8
		if f.proto == 6 {
			hdr = int(l4[12]>>4) * 4
		}
		f.src = fmt.Sprintf("%d.%d.%d.%d:%d", ip[12], ip[13], ip[14], ip[15], bin.BigEndian.Uint16(l4))
		f.dst = fmt.Sprintf("%d.%d.%d.%d:%d", ip[16], ip[17], ip[18], ip[19], bin.BigEndian.Uint16(l4[2:]))
		f.payload = l4[hdr:]
		frames = append(frames, f)
	}
	return frames
}

// headerOf returns the value of the first header name in a SIP message.
func headerOf(msg []byte, name string) string {
	for _, l := range strings.Split(string(msg), "\r\n")[1:] {
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cseqMethod returns the method of a message's CSeq header.
func cseqMethod(msg []byte) string {
	f := strings.Fields(headerOf(msg, "CSeq"))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}
