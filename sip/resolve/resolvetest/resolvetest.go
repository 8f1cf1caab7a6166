// Package resolvetest is a real DNS server on loopback for tests: it serves
// the records it is given (A, AAAA, SRV, NAPTR in zone-file syntax) over UDP
// and counts the questions it gets.
package resolvetest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers from its records; names it has none for get NXDOMAIN.
type Server struct {
	// Addr is the "127.0.0.1:port" to give the resolver.
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case name
	asked   map[string]int      // "name TYPE" → questions
}

// Start serves on a free UDP port of 127.0.0.1 until the test ends.
// records are zone-file lines, e.g. "_sip._udp.gw.test. 60 IN SRV 10 50 5070 a.gw.test.".
func Start(t testing.TB, records ...string) *Server {
	t.Helper()
	return StartAt(t, "127.0.0.1:0", records...)
}

// StartAt is Start on addr ("ip:53" for a C library resolver, which knows
// no other port).
func StartAt(t testing.TB, addr string, records ...string) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: pc.LocalAddr().String(), asked: map[string]int{}}
	s.Set(t, records...)
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return s
}

// Set replaces every record with these.
func (s *Server) Set(t testing.TB, records ...string) {
	t.Helper()
	m := map[string][]dns.RR{}
	for _, line := range records {
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("resolvetest: record %q: %v", line, err)
		}
		name := strings.ToLower(rr.Header().Name)
		m[name] = append(m[name], rr)
	}
	s.mu.Lock()
	s.records = m
	s.mu.Unlock()
}

// Asked returns how many questions of type typ ("A", "SRV", ...) name got.
func (s *Server) Asked(name, typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[strings.ToLower(dns.Fqdn(name))+" "+typ]
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		s.asked[fmt.Sprintf("%s %s", name, dns.TypeToString[q.Qtype])]++
		rrs, known := s.records[name]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		s.mu.Unlock()
		if !known {
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}
