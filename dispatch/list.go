package dispatch

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// LineError is one bad line of a list file.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// ListError names every bad line of a list file, in file order.
type ListError struct {
	Lines []LineError
}

// Error lists the bad lines, one per line of text.
func (e *ListError) Error() string {
	msgs := make([]string, len(e.Lines))
	for i, l := range e.Lines {
		msgs[i] = l.Error()
	}
	return strings.Join(msgs, "\n")
}

// ParseList parses a destination list in Kamailio's format (ds_load_list): one
// destination per line, `setid destination [flags [priority [attrs]]]`,
// fields separated by spaces or tabs.
//
//   - Blank lines and lines whose first non-blank character is '#' are skipped.
//     A '#' also ends the destination, flags and priority fields and the rest of
//     the line is then a comment; the attrs field, however, runs to the next
//     blank as in Kamailio, and anything after it is ignored.
//   - flags are decimal or hexadecimal with a 0x prefix; priority is decimal.
//   - A destination without sip:/sips: gets "sip:" prepended (see NewDestination).
//
// Where Kamailio reads garbage as zero (a set id "abc" is set 0, flags "8x" are
// 8 followed by priority 0 and attrs "x"), ParseList reports the line instead;
// so it does for lines Kamailio 5.6.3 loads although they cannot work: port 0,
// an unknown transport, an invalid IPv4 address, tel: URIs, and the attribute
// mistakes listed at ParseAttrs. Lines longer than Kamailio's 1023-byte buffer
// are read whole, not split. Host names are not resolved here (Kamailio
// resolves them at load unless flag 16 is set).
//
// A URI or duid listed twice in a set is kept twice, as Kamailio does (a
// doubled line doubles the share in hash and round-robin algorithms).
//
// The sets come back in the order Kamailio's dispatcher.list RPC prints them
// (a post-order walk of its AVL tree of set ids, built in order of first
// appearance), and each set's destinations in selection order: higher priority
// first and, among equal priorities, the later line first.
//
// If any line is bad the error is a *ListError naming each as name:line:
// reason, and the sets hold the good lines, for ds_load_mode 0. A read error
// is returned as is, with no sets.
func ParseList(r io.Reader, name string) ([]Set, error) {
	dests, err := ReadList(r, name)
	if dests == nil && err != nil {
		return nil, err
	}
	return BuildSets(dests), err
}

// ReadList parses a list file into its destinations in line order, the form
// that runtime additions extend before BuildSets orders them. Errors are as
// ParseList's: a *ListError still comes with the good lines.
func ReadList(r io.Reader, name string) ([]Destination, error) {
	var (
		dests  []Destination
		errs   []LineError
		br     = bufio.NewReader(r)
		lineNo int
	)
	for {
		line, rerr := br.ReadString('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, fmt.Errorf("list %s:%d: %w", name, lineNo+1, rerr)
		}
		if line == "" && rerr != nil {
			break
		}
		lineNo++
		d, err := parseListLine(line)
		switch {
		case err != nil:
			errs = append(errs, LineError{File: name, Line: lineNo, Reason: err.Error()})
		case d != nil:
			d.Source = name + ":" + strconv.Itoa(lineNo)
			dests = append(dests, *d)
		}
		if rerr != nil {
			break
		}
	}
	if len(errs) > 0 {
		return dests, &ListError{Lines: errs}
	}
	return dests, nil
}

// BuildSets groups destinations given in source order (list lines, table
// rows, then runtime additions) into sets ordered as Kamailio orders them:
// sets by a post-order walk of the AVL tree of set ids in order of first
// appearance, and inside a set higher priority first and, among equal
// priorities, the later source entry first.
func BuildSets(dests []Destination) []Set {
	bySet := map[int][]int{}
	var order setTree
	for i := range dests {
		id := dests[i].SetID
		if _, ok := bySet[id]; !ok {
			order.insert(id)
		}
		bySet[id] = append(bySet[id], i)
	}
	sets := make([]Set, 0, len(bySet))
	order.postOrder(func(id int) {
		idx := bySet[id]
		sort.SliceStable(idx, func(a, b int) bool {
			pa, pb := dests[idx[a]].Priority, dests[idx[b]].Priority
			if pa != pb {
				return pa > pb
			}
			return idx[a] > idx[b]
		})
		out := make([]Destination, len(idx))
		for k, i := range idx {
			out[k] = dests[i]
		}
		sets = append(sets, Set{ID: id, Dests: out})
	})
	return sets
}

// parseListLine parses one line; it returns nil, nil for blank and comment lines.
func parseListLine(line string) (*Destination, error) {
	// fgets hands Kamailio a C string: a NUL ends the line.
	if i := strings.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	p := trimLWS(line)
	if p == "" || p[0] == '#' {
		return nil, nil
	}
	// Set id.
	tok, p := nextField(p, false)
	id, err := strconv.ParseUint(tok, 10, 31)
	if err != nil {
		return nil, fmt.Errorf("bad set id %q: want a decimal number 0..%d", tok, math.MaxInt32)
	}
	p = trimLWS(p)
	if p == "" || p[0] == '#' {
		return nil, fmt.Errorf("missing destination after set id %d", id)
	}
	// Destination: ends at a blank or '#'.
	uri, p := nextField(p, true)
	p = trimLWS(p)
	var (
		flags    uint64
		priority uint64
		attrs    string
	)
	if p != "" && p[0] != '#' {
		tok, p = nextField(p, true)
		if flags, err = parseFlags(tok); err != nil {
			return nil, err
		}
		p = trimLWS(p)
		if p != "" && p[0] != '#' {
			tok, p = nextField(p, true)
			if priority, err = strconv.ParseUint(tok, 10, 31); err != nil {
				return nil, fmt.Errorf("bad priority %q: want a decimal number 0..%d", tok, math.MaxInt32)
			}
			p = trimLWS(p)
			if p != "" && p[0] != '#' {
				// Attributes run to the next blank, '#' included (Kamailio).
				attrs, _ = nextField(p, false)
			}
		}
	}
	d, err := NewDestination(int(id), uri, Flags(flags), int(priority), attrs)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// nextField splits off the text up to the next blank (and '#' when hashEnds).
func nextField(s string, hashEnds bool) (field, rest string) {
	i := 0
	for i < len(s) && !isLWS(s[i]) && !(hashEnds && s[i] == '#') {
		i++
	}
	return s[:i], s[i:]
}

// parseFlags parses the flags column: decimal, or hexadecimal after "0x"
// (Kamailio accepts a lower-case x only; "0X" is rejected rather than read as 0).
// ParseUint takes no sign, so "+8" and "-8" are rejected too.
func parseFlags(tok string) (uint64, error) {
	var (
		v   uint64
		err error
	)
	if strings.HasPrefix(tok, "0x") {
		v, err = strconv.ParseUint(tok[2:], 16, 32)
	} else {
		v, err = strconv.ParseUint(tok, 10, 32)
	}
	if err != nil {
		return 0, fmt.Errorf("bad flags %q: want decimal or 0x hexadecimal", tok)
	}
	return v, nil
}

// setTree is an AVL tree of set ids. Kamailio keeps its sets in one and its
// RPC walks it children first (left, right, then the node), so the printed
// order depends on the tree's shape; standard AVL insertion, as Kamailio's
// ds_avl_insert, gives the same shape for the same insertion order.
type setTree struct{ root *setNode }

type setNode struct {
	id          int
	height      int
	left, right *setNode
}

func (t *setTree) insert(id int) { t.root = avlInsert(t.root, id) }

func (t *setTree) postOrder(f func(id int)) { postOrder(t.root, f) }

func postOrder(n *setNode, f func(int)) {
	if n == nil {
		return
	}
	postOrder(n.left, f)
	postOrder(n.right, f)
	f(n.id)
}

func height(n *setNode) int {
	if n == nil {
		return 0
	}
	return n.height
}

func (n *setNode) fix() { n.height = 1 + max(height(n.left), height(n.right)) }

func rotateRight(n *setNode) *setNode {
	l := n.left
	n.left, l.right = l.right, n
	n.fix()
	l.fix()
	return l
}

func rotateLeft(n *setNode) *setNode {
	r := n.right
	n.right, r.left = r.left, n
	n.fix()
	r.fix()
	return r
}

func avlInsert(n *setNode, id int) *setNode {
	if n == nil {
		return &setNode{id: id, height: 1}
	}
	switch {
	case id < n.id:
		n.left = avlInsert(n.left, id)
	case id > n.id:
		n.right = avlInsert(n.right, id)
	default:
		return n
	}
	n.fix()
	switch bal := height(n.left) - height(n.right); {
	case bal > 1:
		if id > n.left.id {
			n.left = rotateLeft(n.left)
		}
		return rotateRight(n)
	case bal < -1:
		if id < n.right.id {
			n.right = rotateRight(n.right)
		}
		return rotateLeft(n)
	}
	return n
}

// rebuildOrder returns set ids in an order from which BuildSets rebuilds the
// tree whose post-order walk is postOrder, so that the sets come out in
// postOrder again. Inserting the post-order itself would not do: AVL
// rotations along the way can give another shape (post-order 1 2 4 6 7 5 3
// inserted as is walks as 1 3 2 5 7 6 4). A BST is determined by its
// post-order walk (the last id is the root, the smaller ids before it form the
// left subtree); inserting that tree level by level never unbalances a node,
// so no rotation happens and the tree is rebuilt as it was.
func rebuildOrder(postOrder []int) []int {
	var build func(ids []int) *setNode
	build = func(ids []int) *setNode {
		if len(ids) == 0 {
			return nil
		}
		root := ids[len(ids)-1]
		rest := ids[:len(ids)-1]
		i := 0
		for i < len(rest) && rest[i] < root {
			i++
		}
		return &setNode{id: root, left: build(rest[:i]), right: build(rest[i:])}
	}
	out := make([]int, 0, len(postOrder))
	for queue := []*setNode{build(postOrder)}; len(queue) > 0; queue = queue[1:] {
		if n := queue[0]; n != nil {
			out = append(out, n.id)
			queue = append(queue, n.left, n.right)
		}
	}
	return out
}
