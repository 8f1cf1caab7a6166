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

// probe sends one keepalive to dest and waits up to PingTimeout (else
// FRTimer) for its final reply. A transport error, or a host name that does
// not resolve, counts as a timeout, as in Kamailio.
func (s *Server) probe(ctx context.Context, dest *dispatch.Destination) dispatch.ProbeResult {
	h, err := s.probeHop(dest)
	if err != nil {
		return dispatch.ProbeResult{Timeout: true}
	}
	req := s.probeRequest(dest, h)
	timeout := s.cfg.FRTimer
	if s.cfg.PingTimeout > 0 {
		timeout = s.cfg.PingTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
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

// probeHop is where dest's keepalive goes: through the obproxy attribute or
// outbound_proxy when set (the next hop only: no Route header, as Kamailio's
// t_request with an outbound proxy), else to dest (destHop); from the
// listener destSocket chooses for a keepalive.
func (s *Server) probeHop(dest *dispatch.Destination) (hop, error) {
	proxy := s.cfg.PingProxy
	if dest.Attrs.OBProxy != "" {
		proxy = dest.Attrs.OBProxy
	}
	var pu sipmsg.Uri
	if proxy != "" && sipmsg.ParseUri(proxy, &pu) == nil {
		h := hopOf(&pu)
		h.sock = s.destSocket(dest, h.proto, true)
		return h, nil
	}
	h, err := s.destHop(dest)
	if err != nil {
		return hop{}, err
	}
	h.sock = s.destSocket(dest, h.proto, true)
	return h, nil
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
	host, port := s.sentFrom(h.sock, h.proto)
	via := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(h.proto), Host: host, Port: port}
	via.Params.Add("branch", sipmsg.GenerateBranch())
	req.PrependHeader(via)
	req.SetDestination(h.addr)
	req.SetTransport(strings.ToUpper(h.proto))
	req.Laddr = s.laddr(h.sock, h.proto)
	return req
}
