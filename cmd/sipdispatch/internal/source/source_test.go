package source

import (
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

func TestDiff(t *testing.T) {
	mk := func(lines ...string) []dispatch.Set {
		var ds []dispatch.Destination
		for _, l := range lines {
			uri, attrs, _ := strings.Cut(l, " ")
			d, err := dispatch.NewDestination(1, uri, 0, 0, attrs)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		return dispatch.BuildSets(ds)
	}
	status := func(sets []dispatch.Set) []actors.SetStatus {
		var out []actors.SetStatus
		for _, s := range sets {
			st := actors.SetStatus{ID: s.ID}
			for _, d := range s.Dests {
				st.Dests = append(st.Dests, actors.DestStatus{Destination: d})
			}
			out = append(out, st)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		committed []dispatch.Set
		source    []dispatch.Set
		want      int
	}{
		{"same", mk("sip:a", "sip:b"), mk("sip:a", "sip:b"), 0},
		{"added", mk("sip:a"), mk("sip:a", "sip:b"), 1},
		{"removed", mk("sip:a", "sip:b"), mk("sip:b"), 1},
		{"attrs changed", mk("sip:a duid=x"), mk("sip:a duid=y"), 2},
		{"reordered", mk("sip:a", "sip:b"), mk("sip:b", "sip:a"), 1},
		{"empty source", mk("sip:a", "sip:b"), nil, 2},
	} {
		if got := Diff(status(tc.committed), tc.source); got != tc.want {
			t.Errorf("%s: %d differences, want %d", tc.name, got, tc.want)
		}
	}
}
