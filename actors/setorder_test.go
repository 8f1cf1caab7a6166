package actors

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// TestSetOrderSurvivesReplication: a list not sorted by set id keeps
// Kamailio's set order after its sets travel through the log as one
// CmdReplaceSets and every node rebuilds them.
func TestSetOrderSurvivesReplication(t *testing.T) {
	sets, err := dispatch.ParseList(strings.NewReader(
		"1 sip:a\n7 sip:b\n5 sip:c\n3 sip:d\n2 sip:e\n4 sip:f\n6 sip:g\n"), "unsorted.list")
	if err != nil {
		t.Fatal(err)
	}
	want := []int{1, 2, 4, 6, 7, 5, 3} // Kamailio 5.6.3's dispatcher.list
	r, p := newReplicated(t, sets[:1], Options{Seed: 1})
	if err := r.Replace(context.Background(), sets); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, 1)
	if got := r.SetOrder(); !slices.Equal(got, want) {
		t.Fatalf("SetOrder after a replicated reload = %v, want %v", got, want)
	}
}
