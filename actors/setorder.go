package actors

// SetOrder returns the ids of the installed sets in the order they were
// installed, which is dispatch.BuildSets' order: the order Kamailio's
// dispatcher.list prints them. It waits for a Replace or Apply in progress.
func (r *Registry) SetOrder() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]int, len(r.defs))
	for i := range r.defs {
		ids[i] = r.defs[i].ID
	}
	return ids
}
