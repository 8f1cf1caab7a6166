// Package dispatch is the pure core of sipdispatch: destination sets, the
// Kamailio list-file parser, every selection algorithm, marking and the
// call-load table.
//
// Nothing here opens a socket, starts a goroutine or reads the clock: time and
// randomness come in as arguments, so every result is reproducible and the
// package is tested with tables. A SetState is not safe for concurrent use; its
// owner (a set actor in package actors) serialises access to it.
package dispatch
