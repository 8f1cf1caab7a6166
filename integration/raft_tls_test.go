package integration

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// raftPKI makes a cluster CA and one certificate per node name with
// `sipdispatch certs`, as an operator would; it returns the CA file and the
// cert and key file per name.
func raftPKI(t *testing.T, names ...string) (ca string, cert, key map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(binary, append([]string{"certs", "-dir", dir}, names...)...).CombinedOutput(); err != nil {
		t.Fatalf("sipdispatch certs: %v\n%s", err, out)
	}
	cert, key = map[string]string{}, map[string]string{}
	for _, name := range names {
		cert[name], key[name] = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	}
	return filepath.Join(dir, "ca.crt"), cert, key
}

// Three processes with cluster.raft.tls form a cluster: the sets commit, a
// set_state through a node is visible on all three, and the raft port
// drops a plain-TCP client.
func TestClusterRaftTLS(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	base := nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`)
	ca, cert, key := raftPKI(t, "n1", "n2", "n3")
	var nodes []*Node
	var raftAddrs []string
	join := ""
	for i := 1; i <= 3; i++ {
		nip := nextIP()
		gossip := fmt.Sprintf("%s:%d", nip, freePort(t, nip))
		raft := fmt.Sprintf("%s:%d", nip, freePort(t, nip))
		name := fmt.Sprintf("n%d", i)
		y := strings.Replace(clusterYAML(base, i, gossip, raft, join), "bootstrap_expect: 3}",
			fmt.Sprintf("bootstrap_expect: 3, tls: {cert: %q, key: %q, ca: %q}}", cert[name], key[name], ca), 1)
		nodes = append(nodes, startNodeAt(t, nip, y, listFile(1, gw)))
		raftAddrs = append(raftAddrs, raft)
		if join == "" {
			join = gossip
		}
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.APIAddr+" to list the committed sets", 30*time.Second, func() bool {
			f, _ := destStatesErr(n)
			_, ok := f[gw.URI()]
			return ok
		})
	}
	for _, via := range nodes { // through the leader and through followers (forwarded over TLS)
		rpc(t, via, nil, "dispatcher.set_state", "i", 1, gw.URI())
		for _, n := range nodes {
			waitFor(t, "inactive on "+n.APIAddr, 10*time.Second, func() bool {
				f, _ := destStatesErr(n)
				return strings.HasPrefix(f[gw.URI()], "I")
			})
		}
		rpc(t, via, nil, "dispatcher.set_state", "a", 1, gw.URI())
		for _, n := range nodes {
			waitFor(t, "active on "+n.APIAddr, 10*time.Second, func() bool {
				f, _ := destStatesErr(n)
				return strings.HasPrefix(f[gw.URI()], "A")
			})
		}
	}

	c, err := net.DialTimeout("tcp", raftAddrs[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("F\x95\x01\x02\x00\x00\xc4\x00")) // the forwarding selector and a status request, in clear
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("plain-TCP client got %d bytes from a TLS raft port", n)
	}
}
