package cluster

import (
	"testing"
	"time"
)

func TestLingers(t *testing.T) {
	const d = 6 * time.Millisecond
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		busy      bool
		sinceLast time.Duration
		want      bool
	}{
		{"no delay, busy", 0, true, 0, false},
		{"no delay, paced", 0, false, time.Millisecond, false},
		{"busy", d, true, time.Hour, true},
		{"paced: last batch just formed", d, false, time.Millisecond, true},
		{"idle: last batch long ago", d, false, time.Second, false},
		{"idle: exactly one delay ago", d, false, d, false},
	} {
		if got := lingers(tc.delay, tc.busy, tc.sinceLast); got != tc.want {
			t.Errorf("%s: lingers(%v, %v, %v) = %v, want %v", tc.name, tc.delay, tc.busy, tc.sinceLast, got, tc.want)
		}
	}
}
