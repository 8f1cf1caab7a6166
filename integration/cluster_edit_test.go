package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Runtime adds through different nodes at the same time all survive on every
// node (each applies to the committed sets, not to its node's copy of the
// list), and a remove through a third node is seen everywhere.
func TestClusterRuntimeEditsThroughDifferentNodes(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	nodes := startCluster(t, nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gws...), gws[0].URI(), gws[1].URI())

	const perNode = 4
	var wg sync.WaitGroup
	var added []string
	for i, n := range nodes {
		for j := range perNode {
			uri := fmt.Sprintf("sip:127.0.1.%d:%d", 10+i, 5060+j)
			added = append(added, uri)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := rpcErr(n, nil, "dispatcher.add", 1, uri, 0, 0, "duid=rt"+uri[len("sip:"):]); err != nil {
					t.Errorf("add %s through %s: %v", uri, n.APIAddr, err)
				}
			}()
		}
	}
	wg.Wait()
	want := append([]string{gws[0].URI(), gws[1].URI()}, added...)
	for _, n := range nodes {
		waitFor(t, "every added destination on "+n.APIAddr, 15*time.Second, func() bool {
			f, _ := destStatesErr(n)
			for _, u := range want {
				if _, ok := f[u]; !ok {
					return false
				}
			}
			return len(f) == len(want)
		})
	}

	rpc(t, nodes[2], nil, "dispatcher.remove", 1, added[0])
	if err := rpcErr(nodes[1], nil, "dispatcher.remove", 1, "sip:127.9.9.9:5060"); err == nil ||
		!strings.Contains(err.Error(), "Removing dispatcher dst failed") {
		t.Errorf("removing an unknown destination: %v, want Kamailio's failure", err)
	}
	for _, n := range nodes {
		waitFor(t, "the removal on "+n.APIAddr, 15*time.Second, func() bool {
			f, _ := destStatesErr(n)
			_, still := f[added[0]]
			return !still && len(f) == len(want)-1
		})
	}
}
