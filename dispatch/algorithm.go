package dispatch

import "fmt"

// Algorithm is a selection algorithm, numbered as Kamailio's ds_select_dst.
type Algorithm int

// The algorithms (docs/kamailio-compat.md#algorithms).
const (
	AlgHashCallID     Algorithm = 0  // hash of the Call-ID
	AlgHashFrom       Algorithm = 1  // hash of the From URI
	AlgHashTo         Algorithm = 2  // hash of the To URI
	AlgHashRURI       Algorithm = 3  // hash of the Request-URI
	AlgRoundRobin     Algorithm = 4  // round-robin per set
	AlgHashAuthUser   Algorithm = 5  // hash of the digest username, else round-robin
	AlgRandom         Algorithm = 6  // random
	AlgHashPVar       Algorithm = 7  // hash of the expanded hash_pvar template
	AlgFirst          Algorithm = 8  // first active (highest priority)
	AlgWeight         Algorithm = 9  // weight attribute, 100-slot table
	AlgCallLoad       Algorithm = 10 // least call load under maxload
	AlgRelativeWeight Algorithm = 11 // rweight over active destinations
	AlgParallel       Algorithm = 12 // all active destinations in parallel
	AlgLatency        Algorithm = 13 // latency-optimised (congestion control)
	AlgRRSerial       Algorithm = 14 // round-robin if equal priorities, else serial
	AlgPriorityGroups Algorithm = 15 // weighted within the best live priority group
	AlgRendezvous     Algorithm = 16 // weighted rendezvous hash of the Call-ID (sipdispatch)

	// MaxAlgorithm is the highest algorithm number sipdispatch implements.
	MaxAlgorithm = AlgRendezvous

	// AlgOverload is Kamailio's algorithm 64, round-robin with overload
	// control (ocrate/ocidle/ocmax attributes). sipdispatch does not
	// implement it: like any unknown number it takes the first active entry.
	AlgOverload Algorithm = 64
)

var algNames = [...]string{
	"hash-callid", "hash-from", "hash-to", "hash-ruri", "round-robin",
	"hash-authuser", "random", "hash-pvar", "first", "weight", "call-load",
	"relative-weight", "parallel", "latency", "rr-serial", "priority-groups",
	"rendezvous",
}

// Known reports whether sipdispatch implements a; an unknown number selects
// the first active entry, as Kamailio does for a number it does not know
// (Kamailio's 64, AlgOverload, is round-robin with overload control instead).
func (a Algorithm) Known() bool { return a >= 0 && a <= MaxAlgorithm }

func (a Algorithm) String() string {
	if a.Known() {
		return algNames[a]
	}
	return fmt.Sprintf("alg%d", int(a))
}

// IsHash reports whether a picks by hashing a request field, so that every
// node given the same state selects the same destination.
func (a Algorithm) IsHash() bool {
	switch a {
	case AlgHashCallID, AlgHashFrom, AlgHashTo, AlgHashRURI, AlgHashAuthUser, AlgHashPVar, AlgRendezvous:
		return true
	}
	return false
}
