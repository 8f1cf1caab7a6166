package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api/apitest"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

type fakeCluster struct {
	members []cluster.Member
	raft    cluster.RaftStatus
	err     error
}

func (f *fakeCluster) Members() []cluster.Member         { return f.members }
func (f *fakeCluster) Raft() (cluster.RaftStatus, error) { return f.raft, f.err }

func TestClusterMethods(t *testing.T) {
	f := apitest.NewBackend(dispatch.DefaultConfig())
	// Without a cluster the cluster methods say so.
	alone := httptest.NewServer(New(f, "", discardLog, nil))
	defer alone.Close()
	for _, m := range []string{"cluster.members", "cluster.raft", "cluster.leave", "cluster.probers"} {
		if _, b := apitest.Post(t, alone.URL, "", apitest.RPCBody(m, 1)); !strings.Contains(string(b), `"Cluster Not Enabled"`) {
			t.Errorf("%s on a lone node: %s", m, b)
		}
	}

	fc := &fakeCluster{
		members: []cluster.Member{
			{Name: "n1", Addr: "127.0.0.11:7946", State: cluster.StateAlive, RaftID: "n1", RaftAddr: "127.0.0.11:7947", Since: time.Unix(1_700_000_000, 0)},
			{Name: "n2", Addr: "127.0.0.12:7946", State: cluster.StateDead, RaftID: "n2", RaftAddr: "127.0.0.12:7947"},
		},
		raft: cluster.RaftStatus{State: "Leader", LeaderID: "n1", LeaderAddr: "127.0.0.11:7947", Term: 3,
			LastIndex: 42, CommitIndex: 41, AppliedIndex: 40,
			Peers: []cluster.Peer{{ID: "n1", Addr: "127.0.0.11:7947", Suffrage: "Voter"}, {ID: "n2", Addr: "127.0.0.12:7947", Suffrage: "Voter"}}},
	}
	api := New(f, "", discardLog, nil)
	api.SetCluster(fc)
	srv := httptest.NewServer(api)
	defer srv.Close()

	_, b := apitest.Post(t, srv.URL, "", apitest.RPCBody("cluster.members", 1))
	want := `{"jsonrpc":"2.0","result":{"MEMBERS":[{"NAME":"n1","ADDR":"127.0.0.11:7946","STATE":"alive","RAFT_ID":"n1","RAFT_ADDR":"127.0.0.11:7947","SINCE":"2023-11-14T22:13:20Z"},{"NAME":"n2","ADDR":"127.0.0.12:7946","STATE":"dead","RAFT_ID":"n2","RAFT_ADDR":"127.0.0.12:7947","SINCE":"0001-01-01T00:00:00Z"}]},"id":1}`
	if got := strings.Join(strings.Fields(string(b)), ""); got != want {
		t.Errorf("cluster.members\n got %s\nwant %s", got, want)
	}
	_, b = apitest.Post(t, srv.URL, "", apitest.RPCBody("cluster.raft", 2))
	want = `{"jsonrpc":"2.0","result":{"STATE":"Leader","LEADER_ID":"n1","LEADER_ADDR":"127.0.0.11:7947","TERM":3,"LAST_INDEX":42,"COMMIT_INDEX":41,"APPLIED_INDEX":40,"PEERS":[{"ID":"n1","ADDR":"127.0.0.11:7947","SUFFRAGE":"Voter"},{"ID":"n2","ADDR":"127.0.0.12:7947","SUFFRAGE":"Voter"}]},"id":2}`
	if got := strings.Join(strings.Fields(string(b)), ""); got != want {
		t.Errorf("cluster.raft\n got %s\nwant %s", got, want)
	}

	// A raft error still answers the method, with an error.
	fc.err = errors.New("raft not started")
	if _, b := apitest.Post(t, srv.URL, "", apitest.RPCBody("cluster.raft", 3)); !strings.Contains(string(b), `"error"`) {
		t.Errorf("cluster.raft with a failing raft: %s", b)
	}
}

// A cluster.leave that arrives once serve is on its way out without leaving
// fails at once instead of waiting for a leave that never comes; a node
// without a cluster has nothing to leave.
func TestLeaverShutdownWithoutLeave(t *testing.T) {
	quit := 0
	l := NewLeaver(nil, func() { quit++ })
	log := slog.New(slog.DiscardHandler)
	if err := l.Finish(false, log); err != nil {
		t.Fatalf("finish without a leave: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.request(ctx); !errors.Is(err, errNotLeaving) {
		t.Fatalf("request after shutdown: %v, want %v", err, errNotLeaving)
	}
	if quit != 1 {
		t.Errorf("quit called %d times, want 1", quit)
	}
	var none *Leaver
	if err := none.Finish(true, log); err != nil {
		t.Errorf("finish without a cluster: %v", err)
	}
}
