package sip

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// maxProbesInFlight bounds the keepalives of one round.
const maxProbesInFlight = 64

// probeLoop sends keepalives (docs/proxy.md#keepalives) every PingInterval to
// the destinations the Dispatcher says are due, and reports each outcome.
func (s *Server) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, s.cfg.PingInterval)
		targets, err := s.d.ProbeTargets(tctx)
		cancel()
		if err != nil {
			s.log.Warn("sip: probe targets", "err", err)
			continue
		}
		s.probeAll(ctx, targets)
	}
}

// probeAll probes targets concurrently, at most maxProbesInFlight at once,
// and returns when all are reported.
func (s *Server) probeAll(ctx context.Context, targets []actors.ProbeTarget) {
	sem := make(chan struct{}, maxProbesInFlight)
	var wg sync.WaitGroup
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			res := s.probe(ctx, &t.Dest)
			s.d.ReportProbe(t.SetID, t.Dest.URI, res)
		}()
	}
	wg.Wait()
}

// probe sends one keepalive to dest and waits up to FRTimer for its final
// reply. A transport error counts as a timeout, as in Kamailio.
func (s *Server) probe(ctx context.Context, dest *dispatch.Destination) dispatch.ProbeResult {
	h, err := s.destHop(dest)
	if err != nil {
		return dispatch.ProbeResult{Timeout: true}
	}
	req := s.probeRequest(dest, h)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FRTimer)
	defer cancel()
	start := time.Now()
	res, err := s.cli.Do(ctx, req)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Debug("sip: keepalive unanswered", "uri", dest.URI, "err", err)
		}
		return dispatch.ProbeResult{Timeout: true}
	}
	return dispatch.ProbeResult{Code: res.StatusCode, RTT: time.Since(start)}
}

// probeRequest builds the keepalive sent to h: ds_ping_method to the
// destination URI, From ds_ping_from or the destination's ping_from attribute.
func (s *Server) probeRequest(dest *dispatch.Destination, h hop) *sipmsg.Request {
	scheme := dest.Scheme
	if scheme == "" {
		scheme = "sip"
	}
	ruri := sipmsg.Uri{Scheme: scheme, Host: dest.Host, Port: dest.Port}
	if dest.Transport != "" {
		ruri.UriParams.Add("transport", dest.Transport)
	}
	req := sipmsg.NewRequest(sipmsg.RequestMethod(strings.ToUpper(s.cfg.PingMethod)), ruri)
	from := s.cfg.PingFrom
	if dest.Attrs.PingFrom != "" {
		from = dest.Attrs.PingFrom
	}
	fh := &sipmsg.FromHeader{}
	if err := sipmsg.ParseUri(from, &fh.Address); err != nil {
		// Validate checked ds_ping_from; a bad ping_from attribute falls back.
		_ = sipmsg.ParseUri(s.cfg.PingFrom, &fh.Address)
	}
	fh.Params.Add("tag", sipmsg.GenerateTagN(16))
	req.AppendHeader(fh)
	req.AppendHeader(&sipmsg.ToHeader{Address: *ruri.Clone()})
	proto := h.proto
	host, port := s.sentBy(proto)
	via := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(proto), Host: host, Port: port}
	via.Params.Add("branch", sipmsg.GenerateBranch())
	req.PrependHeader(via)
	req.SetDestination(h.addr)
	req.SetTransport(strings.ToUpper(proto))
	if proto == "udp" {
		if k := s.socketFor("udp"); k != nil {
			req.Laddr = sipmsg.Addr{IP: k.ip, Port: k.port}
		}
	}
	return req
}
