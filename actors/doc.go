// Package actors runs one goroutine per destination set. Each set actor owns
// its dispatch.SetState — destinations, states, cursors and call load — and
// every select, mark, probe result and load update reaches it only through its
// bounded mailbox. A Registry finds a set's actor and replaces the sets on
// reload, carrying state over.
package actors
