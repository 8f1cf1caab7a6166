package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipdispatch/sipdispatch/cluster"
)

// counter is a minimal Applier: every command adds one to a named counter and
// returns the new value.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) Apply(index uint64, cmd []byte) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[string(cmd)]++
	return c.m[string(cmd)]
}

// Snapshot copies the map (cheap for a small map); the copy is written later.
func (c *counter) Snapshot() (cluster.SnapshotWriter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := make(snap, len(c.m))
	for k, v := range c.m {
		s[k] = v
	}
	return s, nil
}

// Restore reads the "name count" lines that snap.WriteTo wrote.
func (c *counter) Restore(r io.Reader) error {
	m := map[string]int{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, count, ok := strings.Cut(sc.Text(), " ")
		v, err := strconv.Atoi(count)
		if !ok || err != nil {
			return fmt.Errorf("bad snapshot line %q", sc.Text())
		}
		m[name] = v
	}
	if err := sc.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.m = m
	c.mu.Unlock()
	return nil
}

type snap map[string]int

func (s snap) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for k, v := range s {
		n, err := fmt.Fprintf(w, "%s %d\n", k, v)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s snap) Release() {}

// A one-node cluster (BootstrapExpect 1) on loopback: start, wait for
// leadership, propose.
func ExampleNode_Propose() {
	dir, _ := os.MkdirTemp("", "cluster-example")
	defer os.RemoveAll(dir)
	cfg := cluster.LocalConfig()
	cfg.NodeName = "n1"
	cfg.DataDir = dir
	cfg.GossipBind = "127.0.0.1:0"
	cfg.RaftBind = "127.0.0.1:0"
	cfg.BootstrapExpect = 1
	n, err := cluster.New(cfg, &counter{m: map[string]int{}}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := n.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		res, err := n.Propose(context.Background(), []byte("calls"))
		fmt.Println(res, err)
	}
	// Output:
	// 1 <nil>
	// 2 <nil>
	// 3 <nil>
}
