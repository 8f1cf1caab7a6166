package sip

import (
	"errors"
	"slices"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Replicated alg 10: the proxy commits the INVITE's load entry before it
// forwards it, then confirms and removes the entry as in the direct mode.
func TestReplicatedLoadCommittedBeforeForward(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{3: {gw.dest(3)}})
			d.replicated = true
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(3))
			u := newUAC(t)
			ok, _ := u.call(t, proxy)
			want := []string{"3 " + ok.CallID().Value()}
			if got := d.snapshot(&d.commits); !slices.Equal(got, want) {
				t.Fatalf("commits %v, want %v", got, want)
			}
			if ds, _ := ok.RecordRoute().Address.UriParams.Get("ds"); ds != "3" {
				t.Fatalf("Record-Route %s: want ;ds=3", ok.RecordRoute().Value())
			}
			waitFor(t, "LoadConfirm", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.confirms), want) })
			waitFor(t, "LoadRemove by the BYE", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.removes), want) })
		})
	}
}

// A failed commit (no quorum) answers 503 with Retry-After and the INVITE
// never reaches a gateway.
func TestReplicatedLoadCommitFailure(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			d.replicated = true
			d.commitErr = errors.New("no leader")
			cfg := testConfig(mode)
			cfg.RetryAfter = 7
			_, proxy := startProxy(t, cfg, d, dispatchRoute(1))
			u := newUAC(t)
			inv := u.request(sipmsg.INVITE, proxy, nil)
			rs := u.final(t, inv)
			last := rs[len(rs)-1]
			if last.StatusCode != 503 {
				t.Fatalf("final %d, want 503", last.StatusCode)
			}
			if h := last.GetHeader("Retry-After"); h == nil || h.Value() != "7" {
				t.Fatalf("Retry-After %v, want 7", h)
			}
			if n := gw.invites.Load(); n != 0 {
				t.Fatalf("gateway got %d INVITEs after a failed commit", n)
			}
			if got := d.snapshot(&d.commits); len(got) != 1 {
				t.Fatalf("commits %v, want one attempt", got)
			}
		})
	}
}

// load_replication async: the INVITE is forwarded without waiting for the
// commit, even when every commit would fail (no quorum); the load entry is
// handed to CommitLoadAsync and still confirmed and removed as the call
// proceeds. CommitLoad is never called.
func TestReplicatedLoadAsyncForwardsWithoutWaiting(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{3: {gw.dest(3)}})
			d.replicated = true
			d.commitErr = errors.New("no leader")
			cfg := testConfig(mode)
			cfg.LoadReplication = LoadAsync
			_, proxy := startProxy(t, cfg, d, dispatchRoute(3))
			u := newUAC(t)
			ok, _ := u.call(t, proxy)
			want := []string{"3 " + ok.CallID().Value()}
			if got := d.snapshot(&d.asyncs); !slices.Equal(got, want) {
				t.Fatalf("async commits %v, want %v", got, want)
			}
			if got := d.snapshot(&d.commits); len(got) != 0 {
				t.Fatalf("waited for CommitLoad %v in async mode", got)
			}
			waitFor(t, "LoadConfirm", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.confirms), want) })
			waitFor(t, "LoadRemove by the BYE", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.removes), want) })
		})
	}
}
