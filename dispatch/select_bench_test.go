package dispatch

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkSelect measures one selection per algorithm on a set of 8
// destinations with one inactive, the failover list on and a reused buffer,
// so the numbers include the fallback walk and the failover list.
func BenchmarkSelect(b *testing.B) {
	req := &Request{
		Method: "INVITE", CallID: "a84b4c76e66710@pc33.atlanta.com",
		From: "sip:alice@atlanta.com:5080", To: "sip:bob@biloxi.com",
		RURI: "sip:bob@biloxi.com;transport=tcp", AuthUser: "alice@atlanta.com",
	}
	cfg := DefaultConfig()
	cfg.Flags = FlagsFailover
	cfg.HashPVar = "$fU@$ci"
	for alg := AlgHashCallID; alg <= MaxAlgorithm; alg++ {
		b.Run(alg.String(), func(b *testing.B) {
			ds := withAttrs(gws(8), func(i int, a *Attrs) { a.Weight, a.RWeight = 10+i, 10+i })
			s, err := NewSetState(Set{ID: 1, Dests: ds}, &cfg, rand.New(rand.NewPCG(1, 2)))
			if err != nil {
				b.Fatal(err)
			}
			setFlags(s, FlagInactive, 3)
			buf := make([]int, 0, 8)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Select(req, alg, 0, t0, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Hash("a84b4c76e66710@pc33.atlanta.com", "")
	}
}
