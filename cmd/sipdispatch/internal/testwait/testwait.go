// Package testwait is the deadline-based wait of cmd/sipdispatch's tests and
// of its sub-packages' tests: poll a condition, never sleep a fixed time.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every few milliseconds until it holds, and fails the test
// naming what when timeout passes first.
func For(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
