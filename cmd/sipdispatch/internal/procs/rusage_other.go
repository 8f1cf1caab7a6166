//go:build !unix

package procs

import (
	"errors"
	"time"
)

// cpuTime has no getrusage to read here: the governor stops at once.
func cpuTime() (time.Duration, error) {
	return 0, errors.New("getrusage is not available on this system")
}
