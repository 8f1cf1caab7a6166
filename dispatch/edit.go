package dispatch

import "fmt"

// AddDestination returns sets with d added as if it were a new last line of
// the source (dispatcher.add): among equal priorities of its set it comes
// first, and a new set id makes a new set. sets is not modified.
//
// Runtime edits are applied to the committed sets, not to a node's copy of
// its source, so that additions made through different nodes of a cluster
// all survive in log order.
func AddDestination(sets []Set, d Destination) []Set {
	return BuildSets(append(FlattenSets(sets), d))
}

// RemoveDestination returns sets without the destinations of set setID whose
// URI is uri (dispatcher.remove); a set left empty disappears. It is an error
// wrapping ErrUnknownDestination when there is none. sets is not modified.
func RemoveDestination(sets []Set, setID int, uri string) ([]Set, error) {
	all := FlattenSets(sets)
	kept := make([]Destination, 0, len(all))
	for _, d := range all {
		if d.SetID != setID || d.URI != uri {
			kept = append(kept, d)
		}
	}
	if len(kept) == len(all) {
		return nil, fmt.Errorf("set %d: %q: %w", setID, uri, ErrUnknownDestination)
	}
	return BuildSets(kept), nil
}
