package replica

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// The hand-over of pending load commands (docs/cluster-design.md, "Call
// load through faults"): a node whose confirm, move or removal has not
// committed after handOverAfter gossips it every handOverEvery, and every
// node that hears it proposes it too. A node that cannot reach the leader,
// or dies before it can, then does not take the end of a call with it.
const (
	loadHandOverV1 = 'l'
	handOverAfter  = 2 * time.Second
	handOverEvery  = time.Second
	// maxHandOver bounds one round: memberlist sends a few broadcasts per
	// gossip packet, and a newer round repeats what did not fit.
	maxHandOver = 256
	// maxHandOverBytes keeps a message within memberlist's packet budget.
	maxHandOverBytes = 768
)

// LoadRelay hands this node's stuck load commands to the other nodes and
// adopts theirs.
type LoadRelay struct {
	node *cluster.Node
	reg  *actors.Registry
	log  *slog.Logger
	sent atomic.Uint64
}

// NewLoadRelay returns the relay of node over reg; register Receive with
// node.OnMessage and run Run.
func NewLoadRelay(node *cluster.Node, reg *actors.Registry, log *slog.Logger) *LoadRelay {
	return &LoadRelay{node: node, reg: reg, log: log}
}

// Sent counts the commands this node handed over.
func (r *LoadRelay) Sent() uint64 { return r.sent.Load() }

// Run gossips the stuck commands every handOverEvery until ctx ends.
func (r *LoadRelay) Run(ctx context.Context) {
	t := time.NewTicker(handOverEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cmds := r.reg.PendingLoads(handOverAfter)
		for i, c := range cmds {
			if i == maxHandOver {
				break
			}
			b, err := encodeLoadHandOver(c)
			if err == nil {
				err = r.node.Broadcast(loadHandOverName(c), b)
			}
			if err != nil {
				r.log.Debug("cluster: handing over a load command failed", "call_id", c.CallID, "err", err)
				continue
			}
			r.sent.Add(1)
		}
	}
}

// Receive adopts a load command another node handed over.
func (r *LoadRelay) Receive(from string, payload []byte) {
	if len(payload) == 0 || payload[0] != loadHandOverV1 {
		return
	}
	c, err := decodeLoadHandOver(payload)
	if err != nil {
		r.log.Warn("cluster: malformed load hand-over", "from", from, "err", err)
		return
	}
	r.reg.AdoptLoad(c)
}

func encodeLoadHandOver(c dispatch.Command) ([]byte, error) {
	b, err := dispatch.EncodeCommand(c)
	if err != nil {
		return nil, err
	}
	out := append([]byte{loadHandOverV1}, b...)
	if len(out) > maxHandOverBytes {
		return nil, errors.New("load command too large to gossip")
	}
	return out, nil
}

// decodeLoadHandOver accepts a confirm, move or removal with a Call-ID and
// nothing a load command does not carry.
func decodeLoadHandOver(b []byte) (dispatch.Command, error) {
	if len(b) < 2 || b[0] != loadHandOverV1 || len(b) > maxHandOverBytes {
		return dispatch.Command{}, errors.New("not a load hand-over")
	}
	c, err := dispatch.DecodeCommand(b[1:])
	if err != nil {
		return dispatch.Command{}, err
	}
	switch {
	case c.Kind != dispatch.CmdLoadConfirm && c.Kind != dispatch.CmdLoadMove && c.Kind != dispatch.CmdLoadRemove:
		return dispatch.Command{}, errors.New("not a load command: " + c.Kind.String())
	case c.CallID == "" || c.Set < -1 || len(c.Dests) > 0:
		return dispatch.Command{}, errors.New("load command without a Call-ID or with foreign fields")
	}
	return c, nil
}

// loadHandOverName names a command in the gossip queue, so that a newer
// round replaces what is still queued.
func loadHandOverName(c dispatch.Command) string {
	h := fnv.New64a()
	h.Write([]byte(c.CallID))
	h.Write([]byte{byte(c.Kind)})
	return "load:" + strconv.FormatUint(h.Sum64(), 16)
}
