package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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

// TestReloadDelta: with reload_delta a reload, add or remove within that
// many seconds of the previous one is refused with Kamailio's "Ongoing
// reload", and the sets stay as they were; without it nothing is refused.
func TestReloadDelta(t *testing.T) {
	ctx := context.Background()
	list := filepath.Join(t.TempDir(), "d.list")
	if err := os.WriteFile(list, []byte("1 sip:10.5.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, delta := range []int{0, 3600} {
		cfg := dispatch.DefaultConfig()
		cfg.ListFile, cfg.ReloadDelta = list, delta
		src, reg := loadWithRegistry(t, &cfg)
		if err := src.Reload(ctx); err != nil {
			t.Fatalf("delta %d: first reload: %v", delta, err)
		}
		errs := []error{
			src.Reload(ctx),
			src.Add(ctx, 1, "sip:10.5.0.2", 0, 0, ""),
			src.Remove(ctx, 1, "sip:10.5.0.1"),
		}
		for i, err := range errs {
			if delta == 0 && err != nil {
				t.Errorf("no reload_delta: call %d refused: %v", i, err)
			}
			if delta > 0 && (!errors.Is(err, dispatch.ErrOngoingReload) || err.Error() != "Ongoing reload") {
				t.Errorf("reload_delta %d: call %d = %v, want Ongoing reload", delta, i, err)
			}
		}
		if delta > 0 {
			st, err := reg.Status(ctx)
			if err != nil || len(st) != 1 || len(st[0].Dests) != 1 {
				t.Errorf("sets changed by refused calls: %+v %v", st, err)
			}
		}
	}
}

// loadWithRegistry loads cfg's destinations and returns a source wired to a
// registry of them, as serve does; the registry stops when the test ends.
func loadWithRegistry(t *testing.T, cfg *dispatch.Config) (*Sources, *actors.Registry) {
	t.Helper()
	dests, err := Load(cfg, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := actors.NewRegistry(cfg, dispatch.BuildSets(dests), actors.Options{Seed: 1, Logger: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	src := New(cfg, dests, discardLog)
	src.SetRegistry(reg)
	return src, reg
}
