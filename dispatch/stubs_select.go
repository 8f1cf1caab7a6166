package dispatch

// TEMPORARY: errTODO is used only by stubs_state.go; it goes when that file
// is replaced by list.go, health.go and load.go. Must not survive to a landed
// commit.

import "errors"

var errTODO = errors.New("not implemented yet")
