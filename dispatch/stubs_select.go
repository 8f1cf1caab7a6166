package dispatch

// TEMPORARY contract stubs for the selection helper; replaced by select.go,
// hash.go, key.go and template.go. Must not survive to a landed commit.

import (
	"errors"
	"time"
)

var errTODO = errors.New("not implemented yet")

// Hash is Kamailio's ds_get_hash over one or two keys (y may be "" when absent).
func Hash(x, y string) uint32 { return 0 }

// Template is a compiled template of SPEC §6 variables ($ci, $fU, $hdr(X), $ds.set, ...).
type Template struct{}

// DSVars are the $ds.* template variables of a selection.
type DSVars struct {
	Set   int
	URI   string
	DUID  string
	Attrs string
	Count int
}

// ParseTemplate compiles a template; unknown variables are errors.
func ParseTemplate(s string) (*Template, error) { return nil, errTODO }

// Append appends the expansion of t for req (and ds, which may be nil) to dst.
func (t *Template) Append(dst []byte, req *Request, ds *DSVars) []byte { return dst }

// Select chooses destinations for req with alg (SPEC §5). limit caps the
// selection length (0 = no cap). buf is reused for Selection.Order.
func (s *SetState) Select(req *Request, alg Algorithm, limit int, now time.Time, buf []int) (Selection, error) {
	return Selection{}, errTODO
}

func (s *SetState) initWeights()         {}
func (s *SetState) initRelativeWeights() {}
