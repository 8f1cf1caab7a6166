package actors

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Options configure a Registry. The zero value of each field means its default.
type Options struct {
	// MailboxSize bounds each set's data lane; a full mailbox answers ErrBusy.
	// Default 4096.
	MailboxSize int
	// Now is the clock read once per message. Default time.Now.
	Now func() time.Time
	// Seed seeds each set's random source (algorithm 6 and weight tables);
	// 0 picks a random seed.
	Seed uint64
	// OnEvent receives dst-up/dst-down events from the actor goroutines; it
	// must not block. Default: none (events are logged either way).
	OnEvent func(dispatch.Event)
	// FromSetMode is Kamailio's ds_is_from_list mode: bit 1 ignores the port,
	// bit 2 ignores the transport. Default 0: address, port and transport must
	// all match.
	FromSetMode int
	// Logger receives the actors' logs. Default slog.Default().
	Logger *slog.Logger
	// Resolver answers FromSet for destinations named by a host name and is
	// told every destination list installed. nil: such destinations never
	// match.
	Resolver HostResolver

	// Proposer is where state changes go: every change is proposed as a
	// dispatch.Command and applied only when it comes back committed
	// through Apply. nil: an in-memory log on this node that applies each
	// command at once (tests, tools); the binary always runs raft.
	Proposer Proposer
	// LoadReplication is LoadCommitSync (default) or LoadCommitAsync: whether
	// an algorithm-10 Select waits for its call-load entry to commit.
	LoadReplication string
	// PendingFile, when set, keeps the load commands that have not committed
	// yet in this file, so that a node killed while cut off or during an
	// election proposes them again when it restarts. "": memory only.
	PendingFile string
	// ReserveTimeout bounds how long a replicated algorithm-10 pick counts
	// on its destination before its LoadAdd is applied. Default 10 s.
	ReserveTimeout time.Duration
	// ProposeTimeout bounds the proposals nobody waits for (probe results,
	// expiry sweeps, CommitLoadAsync). Default 5 s.
	ProposeTimeout time.Duration
	// OnLoadCommitFailure, when set, is called with LoadCommitSync or
	// LoadCommitAsync each time a call-load entry fails to commit (a
	// metric); it must not block.
	OnLoadCommitFailure func(mode string)
}

// HostResolver knows the addresses behind destinations named by a host
// name (docs/proxy.md#destinations-named-by-host-name); sip.DestResolver is
// the one the binary uses.
type HostResolver interface {
	// Endpoints lists where a request from d may come from; nil when
	// nothing is known. It runs on the request path, so it should answer
	// from a cache.
	Endpoints(d *dispatch.Destination) []Endpoint
	// Loaded is told the destinations of every list installed (load,
	// reload, add, remove, snapshot restore), so names can be resolved
	// ahead of use. It runs with the registry locked and must not block.
	Loaded(dests []dispatch.Destination)
}

// Endpoint is one address a destination stands for.
type Endpoint struct {
	Addr      netip.Addr
	Port      int
	Transport string // udp, tcp or tls
}

func (o *Options) setDefaults() {
	if o.MailboxSize <= 0 {
		o.MailboxSize = 4096
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ReserveTimeout <= 0 {
		o.ReserveTimeout = defaultReserveTimeout
	}
	if o.ProposeTimeout <= 0 {
		o.ProposeTimeout = defaultProposeTimeout
	}
	if o.LoadReplication == "" {
		o.LoadReplication = LoadCommitSync
	}
}

// Validate checks the options a caller sets by hand.
func (o *Options) Validate() error {
	if o.LoadReplication != "" && o.LoadReplication != LoadCommitSync && o.LoadReplication != LoadCommitAsync {
		return fmt.Errorf("load_replication %q: want %s or %s", o.LoadReplication, LoadCommitSync, LoadCommitAsync)
	}
	return nil
}

// Registry finds a set's actor by id and replaces the sets on reload. Lookups
// read an immutable map behind an atomic pointer: they never wait for a
// reload, and a reload never waits for a request.
type Registry struct {
	cfg  *dispatch.Config
	opts Options

	sets atomic.Pointer[map[int]*Set]

	// mu serialises Replace and Stop; lookups never take it.
	mu      sync.Mutex
	stopped bool
	seq     uint64         // guarded by mu: per-set seed counter
	defs    []dispatch.Set // guarded by mu: the installed sets, for runtime edits

	// Background proposals (replicated mode); bgMu guards bgStopped and
	// bg.Add, so that Stop's Wait never races an Add.
	bgMu      sync.Mutex
	bgStopped bool
	bg        sync.WaitGroup
	bgCtx     context.Context
	bgCancel  context.CancelFunc

	// order holds this node's load commands behind their call's LoadAdd
	// proposal; loads keeps them until they commit.
	order loadOrder
	loads *loadQueue
	// expired counts the call-load entries removed by expiry sweeps: each
	// one is a call whose end this cluster missed.
	expired atomic.Uint64
}

// NewRegistry starts one actor per set. cfg must have passed Validate.
func NewRegistry(cfg *dispatch.Config, sets []dispatch.Set, opts Options) (*Registry, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	r := &Registry{cfg: cfg, opts: opts}
	if r.opts.Proposer == nil {
		r.opts.Proposer = &localLog{r: r}
	}
	var (
		store  *pendingStore
		stored []storedLoad
	)
	if opts.PendingFile != "" {
		var err error
		store, stored, err = openPendingStore(opts.PendingFile, r.opts.Now(), r.opts.Logger)
		if err != nil {
			return nil, err
		}
	}
	r.loads = newLoadQueue(r.opts.Proposer, r.opts.Now, store)
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	empty := map[int]*Set{}
	r.sets.Store(&empty)
	// The first sets are installed directly: they are the start that the
	// committed log (or a Restore) then replaces.
	if err := r.replaceLocal(context.Background(), sets); err != nil {
		r.bgCancel()
		store.close()
		return nil, err
	}
	for _, l := range stored {
		r.loads.add(l.c, l.until, false)
	}
	if len(stored) > 0 {
		r.opts.Logger.Info("load commands pending from before the restart are proposed again", "count", len(stored))
	}
	r.loads.run(r.bgCtx, &r.bg)
	return r, nil
}

// localLog is the in-memory log of a registry without a Proposer: each
// command applies at once, in the order the proposals take its lock.
type localLog struct {
	mu sync.Mutex
	r  *Registry
}

// Propose implements Proposer.
func (l *localLog) Propose(ctx context.Context, c dispatch.Command) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.r.Apply(c)
	return err
}

func (r *Registry) rngLocked() *rand.Rand {
	r.seq++
	seed := r.opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return rand.New(rand.NewPCG(seed, r.seq))
}

// Replace installs a new list of sets (a reload). Every new SetState is built
// first; if any fails nothing changes. Sets that exist on both sides keep
// their actor, which carries state and call load over by duid (else URI);
// new sets get actors; sets that disappeared are stopped.
//
// The new sets are checked, then proposed as one dispatch.CmdReplaceSets;
// they are installed when it applies.
func (r *Registry) Replace(ctx context.Context, sets []dispatch.Set) error {
	return r.proposeReplace(ctx, sets)
}

// AddDest adds d to its set as a new last source entry (dispatcher.add),
// creating the set if needed; state and load carry over as on Replace. The
// edit applies to the sets as installed (in replicated mode: as committed when
// the command applies), so concurrent edits through different nodes of a
// cluster all take effect. A reload replaces runtime edits, as in Kamailio.
func (r *Registry) AddDest(ctx context.Context, d dispatch.Destination) error {
	return r.edit(ctx, dispatch.Command{Kind: dispatch.CmdAddDest, Set: d.SetID, Dests: []dispatch.Destination{d}})
}

// RemoveDest removes every destination with uri from set setID
// (dispatcher.remove); an error wraps dispatch.ErrUnknownDestination when
// there is none.
func (r *Registry) RemoveDest(ctx context.Context, setID int, uri string) error {
	return r.edit(ctx, dispatch.Command{Kind: dispatch.CmdRemoveDest, Set: setID, URI: uri})
}

func (r *Registry) edit(ctx context.Context, c dispatch.Command) error {
	// Check against the installed sets first so that a bad edit gets its
	// error without a round through the log.
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return ErrStopped
	}
	sets, err := editSets(r.defs, c)
	if err == nil {
		scratch := func() *rand.Rand { return rand.New(rand.NewPCG(0, 0)) }
		_, err = r.buildLocked(sets, scratch)
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	c.At = r.opts.Now().UnixNano()
	return r.propose(ctx, c)
}

func (r *Registry) replaceLocal(ctx context.Context, sets []dispatch.Set) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	states, err := r.buildLocked(sets, r.rngLocked)
	if err != nil {
		return err
	}
	return r.installLocked(ctx, states, false)
}

// buildLocked builds the state of every set, each with a source from rng;
// any error (a set id twice, a bad template) fails them all.
func (r *Registry) buildLocked(sets []dispatch.Set, rng func() *rand.Rand) ([]*dispatch.SetState, error) {
	states := make([]*dispatch.SetState, len(sets))
	seen := make(map[int]bool, len(sets))
	for i, set := range sets {
		if seen[set.ID] {
			return nil, fmt.Errorf("reload: set %d appears twice", set.ID)
		}
		seen[set.ID] = true
		st, err := dispatch.NewSetState(set, r.cfg, rng())
		if err != nil {
			return nil, fmt.Errorf("reload: set %d: %w", set.ID, err)
		}
		states[i] = st
	}
	return states, nil
}

// installLocked hands each existing actor its new state (carried over, or
// adopted as is when restore), starts actors for new sets and stops the
// actors of vanished ones.
func (r *Registry) installLocked(ctx context.Context, states []*dispatch.SetState, restore bool) error {
	old := *r.sets.Load()
	next := make(map[int]*Set, len(states))
	defs := make([]dispatch.Set, 0, len(states))
	for _, st := range states {
		// Dests are read-only after construction, so sharing them is safe.
		defs = append(defs, dispatch.Set{ID: st.ID, Dests: st.Dests})
		if a, ok := old[st.ID]; ok {
			if err := a.replace(ctx, st, restore); err != nil {
				return fmt.Errorf("reload: set %d: %w", st.ID, err)
			}
			next[st.ID] = a
			continue
		}
		next[st.ID] = newSet(st, &r.opts)
	}
	r.sets.Store(&next)
	r.defs = defs
	if r.opts.Resolver != nil {
		var all []dispatch.Destination
		for _, d := range defs {
			all = append(all, d.Dests...)
		}
		r.opts.Resolver.Loaded(all)
	}
	for id, a := range old {
		if _, ok := next[id]; !ok {
			a.close()
		}
	}
	return nil
}

// Lookup returns the actor of set id.
func (r *Registry) Lookup(id int) (*Set, bool) {
	s, ok := (*r.sets.Load())[id]
	return s, ok
}

// IDs returns the set ids in ascending order.
func (r *Registry) IDs() []int {
	m := *r.sets.Load()
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (r *Registry) lookup(id int) (*Set, error) {
	if s, ok := r.Lookup(id); ok {
		return s, nil
	}
	return nil, fmt.Errorf("set %d: %w", id, dispatch.ErrUnknownSet)
}

// Select asks set setID for a selection. For an algorithm-10 INVITE it also
// records the call's load entry (Selection.LoadAdded): the set reserves the
// pick, and the entry's LoadAdd is committed before Select returns (sync,
// within ctx; ErrLoadNotCommitted when it cannot) or in the background
// (async). A retransmission of an INVITE whose entry is being committed gets
// ErrLoadInFlight.
func (r *Registry) Select(ctx context.Context, setID int, alg dispatch.Algorithm, req *dispatch.Request, limit int) (Selection, error) {
	s, err := r.lookup(setID)
	if err != nil {
		return Selection{}, err
	}
	sel, c, err := s.selectReserve(ctx, req, alg, limit)
	if err != nil || c == nil {
		return sel, err
	}
	if c.Kind == dispatch.CmdLoadMove {
		r.queueLoad(*c) // the call already has an entry: it follows this pick
	} else if err := r.commitAdd(ctx, sel, *c); err != nil {
		return Selection{}, err
	}
	sel.LoadAdded = true
	return sel, nil
}

// Mark applies op to the destination uri of set setID ("all" for each one).
func (r *Registry) Mark(ctx context.Context, setID int, uri string, op dispatch.MarkOp) error {
	s, err := r.lookup(setID)
	if err != nil {
		return err
	}
	return s.Mark(ctx, uri, op)
}

// MarkDUID applies op to the destination with duid in set setID.
func (r *Registry) MarkDUID(ctx context.Context, setID int, duid string, op dispatch.MarkOp) error {
	s, err := r.lookup(setID)
	if err != nil {
		return err
	}
	return s.MarkDUID(ctx, duid, op)
}

// LoadConfirm marks the call answered in set setID (a 2xx to its INVITE).
// Like LoadMove and LoadRemove it never blocks and cannot fail: the command
// is queued and proposed until it commits (see loadQueue), and whether the
// Call-ID, the set and the destination are known is decided when it
// applies. The set is deliberately not checked here: a node that has just
// restarted knows no set until its log replays, and the BYE it handles
// meanwhile must still end its call.
func (r *Registry) LoadConfirm(setID int, callID string) {
	r.queueLoad(r.loadCommand(dispatch.CmdLoadConfirm, setID, callID, ""))
}

// LoadMove moves the call's load in set setID to the destination uri (a
// failover of an algorithm-10 INVITE).
func (r *Registry) LoadMove(setID int, callID, uri string) {
	r.queueLoad(r.loadCommand(dispatch.CmdLoadMove, setID, callID, uri))
}

// LoadRemove ends the call in set setID, or in whichever set has it when
// setID is negative (a BYE that does not say its set: Kamailio's
// ds_load_unset by Call-ID). Without call load (ds_hash_size 0) it does
// nothing.
func (r *Registry) LoadRemove(setID int, callID string) {
	if r.cfg.HashSize > 0 {
		r.queueLoad(r.loadCommand(dispatch.CmdLoadRemove, max(setID, -1), callID, ""))
	}
}

// loadCommand builds a load command at now; a move addresses its
// destination by duid when this node knows it, else by URI.
func (r *Registry) loadCommand(kind dispatch.CommandKind, setID int, callID, uri string) dispatch.Command {
	c := dispatch.Command{Kind: kind, At: r.opts.Now().UnixNano(), Set: setID, CallID: strings.Clone(callID), URI: uri}
	if kind == dispatch.CmdLoadMove {
		if s, ok := r.Lookup(setID); ok {
			if d, ok := s.findDest(uri, false); ok {
				c.DUID, c.URI = dispatch.DestRef(&d)
			}
		}
	}
	return c
}

// ReportProbe hands a keepalive result to the set's actor without waiting;
// a full mailbox drops it (the next probe repeats the fact) and logs.
func (r *Registry) ReportProbe(setID int, uri string, res dispatch.ProbeResult) {
	s, ok := r.Lookup(setID)
	if !ok {
		return
	}
	// Every result is proposed, not only state changes: the failure and
	// success counters toward the thresholds are replicated state too. In a
	// cluster only the leader calls this (the others gossip their results
	// to it), so each result is proposed once.
	if d, ok := s.findDest(uri, false); ok {
		c := s.command(dispatch.CmdProbe, &d, r.opts.Now())
		c.Probe = res
		r.background(c)
	}
}

// ProbeTargets collects the destinations due for a keepalive from every set.
func (r *Registry) ProbeTargets(ctx context.Context) ([]ProbeTarget, error) {
	var out []ProbeTarget
	for _, id := range r.IDs() {
		s, ok := r.Lookup(id)
		if !ok {
			continue
		}
		reply := make(chan []ProbeTarget, 1)
		if err := s.send(probeTargetsMsg{reply: reply}); err != nil {
			return out, err
		}
		t, err := await(ctx, s, reply)
		if err != nil {
			return out, err
		}
		out = append(out, t...)
	}
	return out, nil
}

// ExpireLoad proposes, without waiting, one dispatch.CmdLoadExpire for every
// set with now as its clock: call-load entries expired at now go, and so do
// tombstones older than dispatch.LateAddWindow. Only the leader should call
// it (or RunExpiry), so that sweeps are not multiplied by the node count.
func (r *Registry) ExpireLoad(now time.Time) {
	r.background(dispatch.Command{Kind: dispatch.CmdLoadExpire, At: now.UnixNano(), Set: -1})
}

// RunExpiry sweeps expired call-load entries every interval until ctx ends.
func (r *Registry) RunExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.ExpireLoad(r.opts.Now())
		}
	}
}

// Status returns every set's state in ascending set id order.
func (r *Registry) Status(ctx context.Context) ([]SetStatus, error) {
	return r.status(ctx, false)
}

// LoadEntries is Status with every set's call-load entries.
func (r *Registry) LoadEntries(ctx context.Context) ([]SetStatus, error) {
	return r.status(ctx, true)
}

func (r *Registry) status(ctx context.Context, entries bool) ([]SetStatus, error) {
	var out []SetStatus
	for _, id := range r.IDs() {
		s, ok := r.Lookup(id)
		if !ok {
			continue
		}
		st, err := s.Status(ctx, entries)
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
	return out, nil
}

// FromSet reports whether a request from ip:port over proto comes from a
// destination of set setID (Kamailio's ds_is_from_list); setID < 0 checks
// every set. Port 0 matches any port and proto "" any transport (the caller's
// per-route mode); Options.FromSetMode widens every check the same way.
// A destination named by a host name matches the endpoints
// Options.Resolver gives for it.
func (r *Registry) FromSet(setID int, ip string, port int, proto string) bool {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	match := func(s *Set) bool {
		for _, d := range *s.dests.Load() {
			if r.matchDest(&d, addr, port, proto) {
				return true
			}
		}
		return false
	}
	if setID >= 0 {
		s, ok := r.Lookup(setID)
		return ok && match(s)
	}
	for _, s := range *r.sets.Load() {
		if match(s) {
			return true
		}
	}
	return false
}

func (r *Registry) matchDest(d *dispatch.Destination, addr netip.Addr, port int, proto string) bool {
	da, err := netip.ParseAddr(d.Host)
	if err == nil {
		return r.matchEndpoint(Endpoint{Addr: da.Unmap(), Port: d.EffectivePort(), Transport: d.EffectiveTransport()}, addr, port, proto)
	}
	if r.opts.Resolver == nil {
		return false
	}
	for _, ep := range r.opts.Resolver.Endpoints(d) {
		if r.matchEndpoint(ep, addr, port, proto) {
			return true
		}
	}
	return false
}

func (r *Registry) matchEndpoint(ep Endpoint, addr netip.Addr, port int, proto string) bool {
	if ep.Addr != addr {
		return false
	}
	if port != 0 && r.opts.FromSetMode&1 == 0 && ep.Port != port {
		return false
	}
	if proto != "" && r.opts.FromSetMode&2 == 0 && !strings.EqualFold(ep.Transport, proto) {
		return false
	}
	return true
}

// Stop stops every actor and waits for them.
func (r *Registry) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.bgCancel()
	for _, s := range *r.sets.Load() {
		s.close()
	}
	r.mu.Unlock()
	// Outside mu: a background proposal may be waiting for an Apply that
	// needs it.
	r.stopBackground()
	r.loads.mu.Lock()
	r.loads.store.close()
	r.loads.mu.Unlock()
}
