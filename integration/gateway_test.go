package integration

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Gateway answer modes.
const (
	answer200 = "200"  // 180 then 200 OK, then takes ACK and answers BYE
	answer503 = "503"  // 503 Service Unavailable to INVITE and OPTIONS (an overloaded gateway)
	deaf      = "deaf" // answers nothing at all (a dead gateway)
)

// Gateway is a minimal UDP SIP user agent server standing in for a PSTN
// gateway or media server: it counts the distinct calls (Call-IDs) that reach
// it and answers as its mode says. It speaks just enough SIP for a proxy test.
type Gateway struct {
	Addr string // ip:port
	pc   net.PacketConn

	mu      sync.Mutex
	mode    string          // guarded by mu
	calls   map[string]bool // guarded by mu: Call-IDs of INVITEs seen
	byes    int             // guarded by mu
	cancels int             // guarded by mu
	options int             // guarded by mu
	optFrom []optionsHit    // guarded by mu: every OPTIONS, in arrival order
	active  map[string]bool // guarded by mu: answered calls not yet ended by BYE
}

func startGateway(t *testing.T, ip, mode string) *Gateway {
	t.Helper()
	return startGatewayAt(t, ip+":0", mode)
}

// startGatewayAt is startGateway on addr, ip:port.
func startGatewayAt(t *testing.T, addr, mode string) *Gateway {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Addr: pc.LocalAddr().String(), pc: pc, mode: mode, calls: map[string]bool{}, active: map[string]bool{}}
	go g.serve()
	t.Cleanup(func() { pc.Close() })
	return g
}

// URI is the gateway's SIP URI for a list file.
func (g *Gateway) URI() string { return "sip:" + g.Addr }

// SetMode changes how the gateway answers from the next request on.
func (g *Gateway) SetMode(m string) { g.mu.Lock(); g.mode = m; g.mu.Unlock() }

// Calls returns the number of distinct calls that reached the gateway.
func (g *Gateway) Calls() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.calls) }

// Active returns the answered calls not yet ended by a BYE.
func (g *Gateway) Active() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.active) }

// Options returns how many OPTIONS keepalives reached the gateway.
func (g *Gateway) Options() int { g.mu.Lock(); defer g.mu.Unlock(); return g.options }

// optionsHit is one OPTIONS: who sent it (ip:port) and when it arrived.
type optionsHit struct {
	from string
	at   time.Time
}

// OptionsFrom counts the OPTIONS that arrived at or after since, by source
// address (ip:port).
func (g *Gateway) OptionsFrom(since time.Time) map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for _, h := range g.optFrom {
		if !h.at.Before(since) {
			out[h.from]++
		}
	}
	return out
}

// Cancels returns how many CANCELs reached the gateway.
func (g *Gateway) Cancels() int { g.mu.Lock(); defer g.mu.Unlock(); return g.cancels }

func (g *Gateway) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := g.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		g.handle(append([]byte(nil), buf[:n]...), from)
	}
}

// sipMsg is a parsed request: start line and headers in order.
type sipMsg struct {
	method string
	ruri   string
	hdrs   [][2]string
}

func (m *sipMsg) get(name string) string {
	for _, h := range m.hdrs {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

func (m *sipMsg) all(name string) []string {
	var out []string
	for _, h := range m.hdrs {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

func parseSIP(b []byte) (*sipMsg, bool) {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	parts := strings.Fields(lines[0])
	if len(parts) != 3 || parts[2] != "SIP/2.0" {
		return nil, false // a response or garbage: a gateway ignores it
	}
	m := &sipMsg{method: parts[0], ruri: parts[1]}
	compact := map[string]string{"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "l": "Content-Length"}
	for _, l := range lines[1:] {
		name, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if c, ok := compact[strings.ToLower(name)]; ok {
			name = c
		}
		m.hdrs = append(m.hdrs, [2]string{name, strings.TrimSpace(val)})
	}
	return m, true
}

func (g *Gateway) handle(b []byte, from net.Addr) {
	m, ok := parseSIP(b)
	if !ok {
		return
	}
	g.mu.Lock()
	mode := g.mode
	callID := m.get("Call-ID")
	switch m.method {
	case "INVITE":
		g.calls[callID] = true
	case "BYE":
		g.byes++
		delete(g.active, callID)
	case "CANCEL":
		g.cancels++
	case "OPTIONS":
		g.options++
		g.optFrom = append(g.optFrom, optionsHit{from: from.String(), at: time.Now()})
	}
	g.mu.Unlock()
	if mode == deaf {
		return
	}
	switch m.method {
	case "INVITE":
		switch mode {
		case answer503:
			g.reply(m, from, 503, "Service Unavailable", false)
		case answer200:
			g.reply(m, from, 180, "Ringing", true)
			g.reply(m, from, 200, "OK", true)
			g.mu.Lock()
			g.active[callID] = true
			g.mu.Unlock()
		}
	case "ACK":
	case "OPTIONS":
		if mode == answer503 {
			g.reply(m, from, 503, "Service Unavailable", false)
		} else {
			g.reply(m, from, 200, "OK", false)
		}
	case "BYE", "CANCEL":
		g.reply(m, from, 200, "OK", false)
	default:
		g.reply(m, from, 501, "Not Implemented", false)
	}
}

// reply answers m; dialog replies carry a To tag, Record-Route and Contact.
func (g *Gateway) reply(m *sipMsg, to net.Addr, code int, reason string, dialog bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range m.all("Via") {
		fmt.Fprintf(&b, "Via: %s\r\n", v)
	}
	if dialog {
		for _, rr := range m.all("Record-Route") {
			fmt.Fprintf(&b, "Record-Route: %s\r\n", rr)
		}
	}
	fmt.Fprintf(&b, "From: %s\r\n", m.get("From"))
	toHdr := m.get("To")
	if !strings.Contains(toHdr, "tag=") && (dialog || code >= 300) {
		toHdr += ";tag=gw" + fmt.Sprint(len(m.get("Call-ID")))
	}
	fmt.Fprintf(&b, "To: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n", toHdr, m.get("Call-ID"), m.get("CSeq"))
	if dialog {
		fmt.Fprintf(&b, "Contact: <sip:gw@%s>\r\n", g.Addr)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	g.pc.WriteTo([]byte(b.String()), to)
}
