package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxGossipSize bounds an encoded broadcast so that it fits a memberlist UDP
// packet (1400 bytes) with room for memberlist's own framing and encryption.
const maxGossipSize = 1100

// MemberState is a gossip member's state as this node last heard it.
type MemberState string

// Member states. Suspect members are reported alive: memberlist only
// notifies confirmed transitions.
const (
	StateAlive MemberState = "alive"
	StateDead  MemberState = "dead" // failed: stopped answering probes
	StateLeft  MemberState = "left" // left gracefully
)

// Member is one gossip member.
type Member struct {
	Name     string
	Addr     string // gossip host:port
	State    MemberState
	Since    time.Time // when this node saw it enter State
	RaftID   string    // empty when the node meta is missing or malformed
	RaftAddr string
	Expect   int // its BootstrapExpect
}

// memberTable is every member this node has heard of, kept up to date from
// memberlist's events (memberlist forgets dead members after a while; the
// leader still needs them to decide reaping).
type memberTable struct {
	mu sync.Mutex
	m  map[string]Member // guarded by mu
}

// update records a memberlist event. memberlist does not say whether a
// departed node left or failed (its Node.State is not maintained), so a
// departure counts as a failure unless the node announced its leave first
// (markLeft).
func (t *memberTable) update(n *memberlist.Node, departed bool, now time.Time, stats *counters) {
	state := StateAlive
	if departed {
		state = StateDead
	}
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: state, Since: now}
	if meta, err := decodeMeta(n.Meta); err == nil {
		m.RaftID, m.RaftAddr, m.Expect = meta.ID, meta.RaftAddr, meta.Expect
	} else {
		stats.badMeta.Add(1)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.m[n.Name]; ok {
		if departed && old.State == StateLeft {
			m.State = StateLeft
		}
		if old.State == m.State {
			m.Since = old.Since
		}
	}
	t.m[n.Name] = m
}

// markLeft records that a node left for good, so that reconciliation removes
// it instead of adding it back. A leave intent (from the node itself, or the
// remove request on the leader) applies whatever the current state;
// hearsay from push/pull only turns a dead member into a left one, never an
// alive one (it may have come back since). It reports whether anything
// changed.
func (t *memberTable) markLeft(name string, intent bool, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.m[name]
	if !ok || m.State == StateLeft || (!intent && m.State == StateAlive) {
		return false
	}
	m.State, m.Since = StateLeft, now
	t.m[name] = m
	return true
}

// left returns the names of members that left.
func (t *memberTable) left() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for name, m := range t.m {
		if m.State == StateLeft {
			out = append(out, name)
		}
	}
	return out
}

// list returns the members sorted by name, forgetting dead and left ones
// older than forget (> 0).
func (t *memberTable) list(now time.Time, forget time.Duration) []Member {
	t.mu.Lock()
	out := make([]Member, 0, len(t.m))
	for name, m := range t.m {
		if forget > 0 && m.State != StateAlive && now.Sub(m.Since) > forget {
			delete(t.m, name)
			continue
		}
		out = append(out, m)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		} else if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// delegate is memberlist's Delegate. Its methods run on memberlist's
// goroutines and never block: received messages are copied into a bounded
// queue (drops counted), broadcasts come from the transmit queue.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.n.meta) > limit {
		return nil // checked in Start; memberlist panics on oversized meta
	}
	return d.n.meta
}

func (d delegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	msg := append([]byte(nil), b...) // memberlist reuses b
	select {
	case d.n.msgCh <- msg:
	default:
		d.n.stats.gossipDropped.Add(1)
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue.GetBroadcasts(overhead, limit)
}

// LocalState sends, in memberlist's periodic push/pull, the members this
// node knows left (bulk state travels in raft).
func (d delegate) LocalState(join bool) []byte {
	b, err := encodeLeft(d.n.members.left())
	if err != nil {
		return nil
	}
	return b
}

// MergeRemoteState learns the members a peer knows left.
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	names, err := decodeLeft(buf)
	if err != nil {
		d.n.stats.gossipBad.Add(1)
		return
	}
	changed := false
	for _, name := range names {
		changed = d.n.members.markLeft(name, false, time.Now()) || changed
	}
	if changed {
		kick(d.n.reconcileCh)
	}
}

// events is memberlist's EventDelegate: it records the change and nudges the
// leader's reconciler and the bootstrapper (coalescing, non-blocking sends;
// they re-read the whole table, so nothing is lost when a nudge is merged).
type events struct{ n *Node }

func (e events) NotifyJoin(node *memberlist.Node)   { e.n.memberEvent(node, false) }
func (e events) NotifyLeave(node *memberlist.Node)  { e.n.memberEvent(node, true) }
func (e events) NotifyUpdate(node *memberlist.Node) { e.n.memberEvent(node, false) }

func (n *Node) memberEvent(node *memberlist.Node, departed bool) {
	n.members.update(node, departed, time.Now(), &n.stats)
	kick(n.reconcileCh)
	kick(n.bootstrapCh)
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// namedBroadcast is a gossip fact; a newer one with the same name replaces
// an older one still queued (memberlist's NamedBroadcast).
type namedBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Name() string { return b.name }
func (b *namedBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*namedBroadcast)
	return ok && o.name == b.name
}
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}

// Broadcast gossips payload to the other members under name: the latest fact
// per name wins, so a queued, not yet fully transmitted older message with the
// same name is dropped. Delivery is best effort (UDP, retransmitted a few
// times to random members; members are not guaranteed to receive it).
// The encoded message must stay under about 1 KB, else ErrTooLarge. Names
// must be non-empty and must not start with a NUL byte (reserved). On a
// standalone node there is nobody to tell: nil, nothing is sent.
func (n *Node) Broadcast(name string, payload []byte) error {
	if !n.started.Load() {
		return ErrNotStarted
	}
	if n.cfg.Standalone {
		return nil
	}
	if name == "" || name[0] == 0 {
		return errors.New("broadcast: empty name or reserved leading NUL byte")
	}
	msg, err := encodeGossip(gossipMsg{From: n.cfg.NodeName, Name: name, Payload: payload})
	if err != nil {
		return err
	}
	if len(msg) > maxGossipSize {
		return fmt.Errorf("broadcast %q: %d bytes encoded, limit %d: %w", name, len(msg), maxGossipSize, ErrTooLarge)
	}
	n.queue.QueueBroadcast(&namedBroadcast{name: name, msg: msg})
	return nil
}

// OnMessage registers fn to receive every broadcast from other members:
// from is the sender's node name. Handlers run one at a time on the node's
// delivery goroutine, in registration order; a slow handler delays the others
// and, when the queue fills, makes the node drop messages (counted in
// Stats.GossipDropped). Register before Start to see every message.
func (n *Node) OnMessage(fn func(from string, payload []byte)) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.msgHandlers = append(slices.Clone(n.msgHandlers), fn)
}

func (n *Node) deliverMessages() {
	defer n.wg.Done()
	for {
		select {
		case b := <-n.msgCh:
			m, err := decodeGossip(b)
			if err != nil {
				n.stats.gossipBad.Add(1)
				n.log.Warn("cluster: malformed gossip message", "err", err)
				continue
			}
			if m.leave {
				// Pass the intent on once: memberlist only sends user
				// broadcasts from their origin, to a few random members.
				if n.members.markLeft(m.From, true, time.Now()) {
					n.queue.QueueBroadcast(&namedBroadcast{name: "\x00leave:" + m.From, msg: b})
					kick(n.reconcileCh)
				}
				continue
			}
			n.stats.gossipReceived.Add(1)
			n.hmu.Lock()
			hs := n.msgHandlers
			n.hmu.Unlock()
			for _, h := range hs {
				h(m.From, m.Payload)
			}
		case <-n.shutdownCh:
			return
		}
	}
}
