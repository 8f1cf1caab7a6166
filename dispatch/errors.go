package dispatch

import "errors"

// Sentinel errors; callers test them with errors.Is.
var (
	// ErrNoDestination means the set has no destination that may be selected
	// (all inactive, disabled or over maxload). The proxy answers 503.
	ErrNoDestination = errors.New("no active destination")
	// ErrUnknownSet means no set with the requested id exists.
	ErrUnknownSet = errors.New("unknown set")
	// ErrUnknownDestination means the set has no destination with that URI or duid.
	ErrUnknownDestination = errors.New("unknown destination")
	// ErrOngoingReload refuses a reload, add or remove that comes less than
	// reload_delta seconds after the previous one; the API answers it as
	// Kamailio does, 500 "Ongoing reload".
	ErrOngoingReload = errors.New("Ongoing reload")
)
