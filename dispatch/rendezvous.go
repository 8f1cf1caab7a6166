package dispatch

// RendezvousOwner returns the member that owns key by highest-random-weight
// (rendezvous) hashing: every member scores the key, the highest score wins,
// ties go to the lexicographically smaller name. The answer depends only on
// the key and the set of names, never on their order or duplicates, and when
// a member joins or leaves only the keys it wins or held move (about 1/N of
// them). No members: "".
//
// The cluster uses it to pick the one live node that probes a gateway
// (docs/cluster.md#probing-in-a-cluster); the score is algorithm 16's,
// unweighted: splitmix64 of the XORed FNV-1a hashes of the key and the member
// name.
func RendezvousOwner(key string, members []string) string {
	kh := fnv64(key)
	var best string
	var bestScore uint64
	for i, m := range members {
		sc := mix64(kh ^ fnv64(m))
		if i == 0 || sc > bestScore || (sc == bestScore && m < best) {
			best, bestScore = m, sc
		}
	}
	return best
}
