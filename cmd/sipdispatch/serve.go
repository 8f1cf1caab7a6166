package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/metrics"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/procs"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/webhook"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip"
	"github.com/sipdispatch/sipdispatch/sip/capture"
)

// runServe runs one node until SIGINT/SIGTERM: it loads the destination
// source, starts one actor per set, then the SIP proxy. SIGHUP reloads the
// source; a bad reload keeps the running sets.
func runServe(args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := registerServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: serve takes flags only, got %q", errUsage, fs.Args())
	}
	c, err := configFromFlags(fs, f)
	if err != nil {
		return err
	}
	log, err := newLogger(c.Log, stderr)
	if err != nil {
		return err
	}
	for _, w := range c.Warnings() {
		log.Warn("config", "notice", w)
	}
	// GOMAXPROCS first, so startup and the listeners run under it: a fixed
	// node.procs, or the governor (docs/configuration.md, node.procs) until
	// serve returns, leaving the Ps at their maximum.
	if n, fixed := c.Node.Procs.Fixed(); fixed {
		runtime.GOMAXPROCS(n)
	}
	maxProcs := runtime.GOMAXPROCS(0)
	if _, fixed := c.Node.Procs.Fixed(); !fixed {
		procsCtx, stopProcs := context.WithCancel(context.Background())
		waitProcs := procs.Start(procsCtx, log)
		defer func() {
			stopProcs()
			waitProcs()
		}()
	}
	if err := os.MkdirAll(c.Node.DataDir, 0o755); err != nil {
		return fmt.Errorf("failed to create data dir: %w", err)
	}
	dests, err := source.Load(&c.Dispatcher.Config, log)
	if err == nil {
		// Socket attributes must name one of our listeners.
		dests, err = source.Checked(dests, c.checkDestination, c.Dispatcher.LoadMode, log)
	}
	if err != nil {
		return fmt.Errorf("failed to load destinations: %w", err)
	}
	sets := dispatch.BuildSets(dests)
	m := metrics.New(log)
	onEvent := m.OnEvent
	var hook *webhook.Sender
	if c.Events.WebhookURL != "" {
		if hook, err = webhook.New(c.Events, webhook.QueueSize, "sipdispatch/"+version, log); err != nil {
			return fmt.Errorf("failed to create the webhook: %w", err)
		}
		onEvent = fanOut(m.OnEvent, hook.OnEvent)
		m.Registry().MustRegister(hook)
	}
	src := source.New(&c.Dispatcher.Config, dests, log)
	// One resolver for sending and for from_set, so both see the same answers.
	dnsRes, err := sip.NewDestResolver(c.dnsConfig(), log)
	if err != nil {
		return fmt.Errorf("failed to create the DNS resolver: %w", err)
	}
	src.Check = c.checkDestination
	// A standalone node runs the same one-node raft registry, so
	// load_replication applies with or without cluster.enabled. Load
	// commands that have not committed survive a restart in the data dir.
	opts := actors.Options{Logger: log, OnEvent: onEvent, OnLoadCommitFailure: m.LoadCommitFailure,
		LoadReplication: c.Cluster.LoadReplication, PendingFile: filepath.Join(c.Node.DataDir, pendingLoadFile),
		Resolver: dnsRes}
	// Without cluster.enabled the node is a standalone one-node raft on
	// node.data_dir (docs/cluster.md): the same registry, proposer and applier.
	var node *cluster.Node
	var leaderWork []func(context.Context)
	if hook != nil {
		// Every node applies the same events; only the leader sends them.
		leaderWork = append(leaderWork, hook.WhileLeader)
	}
	startCtx, cancel := context.WithTimeout(context.Background(), clusterJoinTimeout)
	reg, node, err := startCluster(startCtx, &c, opts, src, m, log, leaderWork...)
	cancel()
	if err != nil {
		return err
	}
	defer reg.Stop()
	var relay *replica.LoadRelay
	if c.Cluster.Enabled {
		relay = replica.NewLoadRelay(node, reg, log)
		node.OnMessage(relay.Receive)
	}
	m.RegisterLoadQueue(reg, func() uint64 {
		if relay == nil {
			return 0
		}
		return relay.Sent()
	})
	// Runs before reg.Stop: no command is applied to stopped actors.
	defer func() {
		if err := node.Close(); err != nil {
			log.Warn("cluster node close", "err", err)
		}
	}()
	router, err := c.router(sets)
	if err != nil {
		return fmt.Errorf("failed to compile routes: %w", err)
	}
	sipCfg := c.sipConfig()
	if sipCfg.UDPReaders == 0 {
		// One per CPU: the Ps the process has at its busiest, not however
		// many the governor leaves it when the listeners open.
		sipCfg.UDPReaders = min(maxProcs, sip.MaxUDPReaders)
	}
	sipCfg.Observer = m
	sipCfg.Resolver = dnsRes
	var capt *capture.Sender
	if c.Capture.HEP != "" {
		if capt, err = capture.New(c.Capture, log); err != nil {
			return fmt.Errorf("failed to start SIP capture: %w", err)
		}
		sipCfg.Tap = capt
		m.RegisterCapture(capt)
	} else {
		m.RegisterCapture(nil) // the series exist, at 0
	}
	gate := &replica.ProbeGate{Registry: reg}
	if c.Cluster.Enabled {
		// Probe only this node's share, the leader proposes (docs/cluster-design.md,
		// "Probing"). Registered
		// after Start: a result gossiped before is repeated next round.
		gate.Relay = replica.NewProbeRelay(c.Node.Name, node, reg, m.Registry(), log)
		node.OnMessage(gate.Relay.Receive)
	}
	sip.SetWaitTimer(sipCfg.WaitTimer) // process-wide (sipgo's timers), before the server starts
	srv, err := sip.NewServer(sipCfg, gate, router, log)
	if err != nil {
		return fmt.Errorf("failed to create SIP server: %w", err)
	}
	token := ""
	if c.API.TokenFile != "" {
		if token, err = api.ReadTokenFile(c.API.TokenFile); err != nil {
			return fmt.Errorf("failed to read api.token_file: %w", err)
		}
	}
	apiLn, err := net.Listen("tcp", c.API.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen for the API: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// cluster.leave ends the SIP server only; the API stays up to answer it.
	sipCtx, quit := context.WithCancel(ctx)
	defer quit()
	go reloadOnHUP(ctx, src, log)
	go dnsRes.Run(ctx)
	if relay != nil {
		go relay.Run(ctx)
	}
	if hook != nil {
		go hook.Run(ctx)
	}
	if capt != nil {
		go capt.Run(ctx)
	}
	apiDone := make(chan error, 1)
	b := &nodeBackend{Registry: reg, cfg: &c.Dispatcher.Config, src: src, gate: gate,
		node: node, clustered: c.Cluster.Enabled}
	m.WatchDestinations(b)
	m.RegisterCluster(node)
	m.RegisterSIPDropped(srv.Dropped)
	m.RegisterReady(b.Ready)
	apiSrv := api.New(b, token, log, m.Handler(log))
	apiSrv.SetCluster(node)
	var leaver *api.Leaver
	if c.Cluster.Enabled {
		leaver = api.NewLeaver(node, quit)
		apiSrv.SetLeaver(leaver)
		apiSrv.SetProbeOwners(gate.Relay)
	}
	go func() { apiDone <- api.Serve(ctx, apiLn, apiSrv, log) }()

	log.Info("sipdispatch serving", "version", version, "listen", strings.Join(c.Listen, ","),
		"mode", c.Proxy.Mode, "sets", len(sets), "source", c.sourceName(), "cluster", c.Cluster.Enabled,
		"procs", c.Node.Procs.String())
	serveErr := srv.Serve(sipCtx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("SIP server shutdown", "err", err)
	}
	leaveErr := leaver.Finish(c.Cluster.LeaveOnTerminate, log)
	stop()
	if err := <-apiDone; err != nil {
		log.Warn("API server", "err", err)
	}
	if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
		return serveErr
	}
	if leaveErr != nil {
		return leaveErr
	}
	log.Info("sipdispatch stopped")
	return nil
}

// reloadOnHUP re-reads the source on SIGHUP; a failed reload keeps the sets.
func reloadOnHUP(ctx context.Context, src *source.Sources, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := src.Reload(ctx); err != nil {
				log.Error("reload failed; running sets kept", "err", err)
			}
		}
	}
}

// sipConfig maps the file's listen/proxy/dispatcher keys to the proxy's config.
func (c *fileConfig) sipConfig() sip.Config {
	s := sip.DefaultConfig()
	s.Listen = c.Listen
	s.Advertise = c.Advertise
	s.Mode = c.Proxy.Mode
	s.RecordRoute = c.Proxy.RecordRoute
	s.MaxForwards = c.Proxy.MaxForwards
	s.FRTimer = c.Proxy.FrTimer
	s.FRInvTimer = c.Proxy.FrInvTimer
	s.WaitTimer = c.Proxy.WtTimer
	s.UDPReaders = c.Proxy.UDPReaders
	s.TLSCert, s.TLSKey = c.Proxy.TLSCert, c.Proxy.TLSKey
	s.PingInterval = time.Duration(c.Dispatcher.PingInterval) * time.Second
	s.PingMethod = c.Dispatcher.PingMethod
	s.PingFrom = c.Dispatcher.PingFrom
	s.PingTimeout = time.Duration(c.Dispatcher.PingFRTimer) * time.Millisecond
	s.PingProxy = c.Dispatcher.OutboundProxy
	s.DefaultSocket, s.DefaultSockname = c.Dispatcher.DefaultSocket, c.Dispatcher.DefaultSockname
	s.PingSocket = c.Dispatcher.PingSocket
	s.UserAgent = "sipdispatch/" + version
	return s
}

// dnsConfig maps the ds_dns_* keys of dispatcher to the proxy's resolver.
func (c *fileConfig) dnsConfig() sip.DNSConfig {
	d := &c.Dispatcher.Config
	return sip.DNSConfig{
		Mode:     d.DNSMode,
		Interval: time.Duration(d.DNSInterval) * time.Second,
		TTL:      time.Duration(d.DNSTTL) * time.Second,
		MatchAll: d.DNSMatchAll == 1,
	}
}

// checkDestination refuses a destination whose socket, sockname or
// ping_socket attribute names none of the listeners (the sip package's rule).
func (c *fileConfig) checkDestination(d *dispatch.Destination) error {
	sc := c.sipConfig()
	return sc.CheckDestination(d)
}

// newLogger builds the slog logger of log.level and log.format.
func newLogger(lc logConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: %w", lc.Level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// fanOut calls each hook in turn with every event; the actors' single
// OnEvent feeds both metrics and the webhook this way.
func fanOut(hooks ...func(dispatch.Event)) func(dispatch.Event) {
	return func(ev dispatch.Event) {
		for _, h := range hooks {
			h(ev)
		}
	}
}
