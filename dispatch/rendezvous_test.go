package dispatch

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestRendezvousOwner(t *testing.T) {
	three := []string{"n1", "n2", "n3"}
	tests := []struct {
		name    string
		key     string
		members []string
		want    string
	}{
		{"no members", "sip:10.0.0.1:5060", nil, ""},
		{"empty members", "sip:10.0.0.1:5060", []string{}, ""},
		{"one member owns everything", "sip:10.0.0.1:5060", []string{"n1"}, "n1"},
		{"one member, empty key", "", []string{"solo"}, "solo"},
		{"duplicates change nothing", "sip:10.0.0.1:5060", []string{"n1", "n1"}, "n1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := RendezvousOwner(tc.key, tc.members); got != tc.want {
				t.Fatalf("RendezvousOwner(%q, %q) = %q, want %q", tc.key, tc.members, got, tc.want)
			}
		})
	}
	// The owner is one of the members, the same for every order and with
	// duplicates, and the same on every call.
	orders := [][]string{{"n1", "n2", "n3"}, {"n3", "n2", "n1"}, {"n2", "n3", "n1"}, {"n2", "n1", "n3", "n2", "n1"}}
	for i := range 200 {
		key := fmt.Sprintf("sip:10.0.%d.%d:5060", i/250, i%250)
		want := RendezvousOwner(key, three)
		if want != "n1" && want != "n2" && want != "n3" {
			t.Fatalf("owner of %q is %q, not a member", key, want)
		}
		for _, o := range orders {
			if got := RendezvousOwner(key, o); got != want {
				t.Fatalf("owner of %q: %q with members %q, %q with %q", key, got, o, want, three)
			}
		}
	}
}

// Adding or removing a member moves only the keys it takes or held, about
// 1/N of them, and every member owns about 1/N of the keys.
func TestRendezvousOwnerMovesFewKeys(t *testing.T) {
	const keys = 10000
	rng := rand.New(rand.NewPCG(1, 2))
	ks := make([]string, keys)
	for i := range ks {
		ks[i] = fmt.Sprintf("sip:10.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), 5060+rng.IntN(100))
	}
	for n := 2; n <= 8; n++ {
		before := make([]string, n)
		for i := range before {
			before[i] = fmt.Sprintf("node-%d", i+1)
		}
		after := append(append([]string(nil), before...), fmt.Sprintf("node-%d", n+1))
		owners := map[string]int{}
		moved := 0
		for _, k := range ks {
			a, b := RendezvousOwner(k, before), RendezvousOwner(k, after)
			owners[a]++
			if a != b {
				moved++
				if b != after[n] {
					t.Fatalf("n=%d: key %q moved from %s to %s, not to the new member", n, k, a, b)
				}
			}
		}
		// Expected share of the new member: keys/(n+1); allow ±25 %.
		want := keys / (n + 1)
		if moved < want*3/4 || moved > want*5/4 {
			t.Errorf("n=%d → %d members: %d of %d keys moved, want about %d", n, n+1, moved, keys, want)
		}
		for _, m := range before {
			if c, share := owners[m], keys/n; c < share*3/4 || c > share*5/4 {
				t.Errorf("n=%d: %s owns %d keys, want about %d", n, m, c, share)
			}
		}
		// Removing a member moves exactly the keys it owned.
		gone := before[0]
		rest := before[1:]
		for _, k := range ks {
			a, b := RendezvousOwner(k, before), RendezvousOwner(k, rest)
			if a != b && a != gone {
				t.Fatalf("n=%d: removing %s moved key %q from %s to %s", n, gone, k, a, b)
			}
		}
	}
}

func BenchmarkRendezvousOwner(b *testing.B) {
	members := []string{"n1", "n2", "n3", "n4", "n5"}
	for b.Loop() {
		RendezvousOwner("sip:10.0.0.1:5060;transport=tcp", members)
	}
}
