package dispatch

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func setURIs(sets []Set) map[int][]string {
	out := make(map[int][]string)
	for _, s := range sets {
		for _, d := range s.Dests {
			out[s.ID] = append(out[s.ID], d.URI)
		}
	}
	return out
}

func TestAddRemoveDestination(t *testing.T) {
	base, err := ParseList(strings.NewReader(
		"1 sip:10.0.0.1 0 0\n1 sip:10.0.0.2 0 5\n2 sip:10.0.0.3 0 0\n"), "e.list")
	if err != nil {
		t.Fatal(err)
	}
	dest := func(set int, uri string, prio int) Destination {
		d, err := NewDestination(set, uri, 0, prio, "")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	orig := setURIs(base)
	cases := []struct {
		name string
		edit func() ([]Set, error)
		want map[int][]string
		err  error
	}{
		{"add equal priority comes first", func() ([]Set, error) {
			return AddDestination(base, dest(1, "sip:10.0.0.9", 0)), nil
		}, map[int][]string{1: {"sip:10.0.0.2", "sip:10.0.0.9", "sip:10.0.0.1"}, 2: {"sip:10.0.0.3"}}, nil},
		{"add higher priority leads", func() ([]Set, error) {
			return AddDestination(base, dest(1, "sip:10.0.0.9", 9)), nil
		}, map[int][]string{1: {"sip:10.0.0.9", "sip:10.0.0.2", "sip:10.0.0.1"}, 2: {"sip:10.0.0.3"}}, nil},
		{"add makes a new set", func() ([]Set, error) {
			return AddDestination(base, dest(7, "sip:10.0.0.7", 0)), nil
		}, map[int][]string{1: {"sip:10.0.0.2", "sip:10.0.0.1"}, 2: {"sip:10.0.0.3"}, 7: {"sip:10.0.0.7"}}, nil},
		{"remove one", func() ([]Set, error) {
			return RemoveDestination(base, 1, "sip:10.0.0.2")
		}, map[int][]string{1: {"sip:10.0.0.1"}, 2: {"sip:10.0.0.3"}}, nil},
		{"remove last of a set drops the set", func() ([]Set, error) {
			return RemoveDestination(base, 2, "sip:10.0.0.3")
		}, map[int][]string{1: {"sip:10.0.0.2", "sip:10.0.0.1"}}, nil},
		{"remove from the wrong set", func() ([]Set, error) {
			return RemoveDestination(base, 2, "sip:10.0.0.1")
		}, nil, ErrUnknownDestination},
		{"remove unknown uri", func() ([]Set, error) {
			return RemoveDestination(base, 1, "sip:10.0.0.99")
		}, nil, ErrUnknownDestination},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.edit()
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			g := setURIs(got)
			if len(g) != len(tc.want) {
				t.Fatalf("sets %v, want %v", g, tc.want)
			}
			for id, w := range tc.want {
				if !slices.Equal(g[id], w) {
					t.Errorf("set %d = %v, want %v", id, g[id], w)
				}
			}
			if o := setURIs(base); len(o) != len(orig) || !slices.Equal(o[1], orig[1]) || !slices.Equal(o[2], orig[2]) {
				t.Errorf("input sets changed: %v, was %v", o, orig)
			}
		})
	}
}
