package sip

import (
	"sync"
	"time"
)

// Sizes of the stateless mode's bounded memories.
const (
	branchCacheSize = 1 << 16
	pendingLoadSize = 1 << 16
)

// expiringMap is a bounded map whose entries lapse after ttl. The stateless
// proxy keeps the little it must remember here, so that memory stays
// bounded whatever peers do.
type expiringMap[V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	// m is guarded by mu.
	m map[string]expiring[V]
}

type expiring[V any] struct {
	v   V
	exp time.Time
}

func newExpiringMap[V any](max int, ttl time.Duration) *expiringMap[V] {
	return &expiringMap[V]{ttl: ttl, max: max, m: make(map[string]expiring[V])}
}

// put stores v under k; when the map is full of live entries it refuses and
// returns false.
func (e *expiringMap[V]) put(k string, v V, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) >= e.max {
		for key, x := range e.m {
			if now.After(x.exp) {
				delete(e.m, key)
			}
		}
		if len(e.m) >= e.max {
			return false
		}
	}
	e.m[k] = expiring[V]{v: v, exp: now.Add(e.ttl)}
	return true
}

// get returns the live entry under k.
func (e *expiringMap[V]) get(k string, now time.Time) (V, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[k]
	if !ok || now.After(x.exp) {
		var zero V
		return zero, false
	}
	return x.v, true
}

// take removes and returns the entry under k.
func (e *expiringMap[V]) take(k string) (V, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[k]
	delete(e.m, k)
	return x.v, ok
}

// len counts the entries, live or not.
func (e *expiringMap[V]) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.m)
}

// loadTracker remembers, in stateless mode, which set recorded an alg-10
// INVITE's call load (Call-ID -> set id), so that its final response, seen
// without a transaction, can confirm or remove the entry.
type loadTracker struct{ pending *expiringMap[int] }

func newLoadTracker(ttl time.Duration) *loadTracker {
	return &loadTracker{pending: newExpiringMap[int](pendingLoadSize, ttl)}
}

// finalLoad applies an INVITE's final reply code to its call-load entry
// (docs/configuration.md, call load): 2xx confirms, >=300 removes.
func (s *Server) finalLoad(setID int, callID string, code int) {
	if code < 300 {
		s.d.LoadConfirm(setID, callID)
		return
	}
	s.removeLoad(setID, callID)
}

// moveLoad follows a failover with the call's load entry, so the load counts
// on the gateway now carrying the call (Kamailio's ds_load_replace).
func (s *Server) moveLoad(setID int, callID, uri string) {
	s.d.LoadMove(setID, callID, uri)
}

// removeLoad ends a call's load entry (>=300, CANCEL, BYE); setID -1 = any set.
func (s *Server) removeLoad(setID int, callID string) {
	s.d.LoadRemove(setID, callID)
}
