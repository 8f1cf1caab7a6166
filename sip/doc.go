// Package sip is the SIP proxy of sipdispatch, built on github.com/emiago/sipgo:
// listeners, stateful and stateless forwarding, Record-Route and loose routing,
// failover through a selection, call-load tracking and OPTIONS keepalives.
// It reaches destination sets only through the Dispatcher interface it
// declares; routing decisions come from a Router compiled from `routes:`.
package sip
