// Package imports holds the import-rule tests of docs/architecture.md. It is
// a package of its own so that `make lint` runs them without the race build
// of the sipdispatch binary that the integration tests' TestMain makes.
package imports

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/sipdispatch/sipdispatch/"

// allowed lists, per package, the non-standard-library import prefixes its
// non-test files may use (docs/architecture.md). Standard library imports are
// always allowed except where banned below. A sub-package follows the rules
// of its nearest listed ancestor and may also import inside that tree.
// cluster stays domain-free: it imports neither actors nor dispatch.
var allowed = map[string][]string{
	"dispatch": {"github.com/vmihailenco/msgpack/v5"},
	"actors":   {module + "dispatch"},
	"cluster": {"github.com/hashicorp/raft",
		"github.com/hashicorp/raft-boltdb", "github.com/hashicorp/memberlist", "github.com/vmihailenco/msgpack/v5",
		"github.com/hashicorp/go-hclog"},
	// The raft log store: files and raft's types, nothing of the node.
	"cluster/logstore": {"github.com/hashicorp/raft", "golang.org/x/sys/unix"},
	"sip":              {module + "dispatch", module + "actors", "github.com/emiago/sipgo", "github.com/icholy/digest", "golang.org/x/sys/unix", "gopkg.in/yaml.v3"},
	// The stateful proxy's UDP transaction layer: SIP messages and their
	// bytes, no routing.
	"sip/txn": {"github.com/emiago/sipgo", module + "sip/sipenc"},
	// sipgo messages to bytes, nothing else.
	"sip/sipenc": {"github.com/emiago/sipgo"},
	// The resolver stands alone: DNS and its cache, nothing of the proxy.
	"sip/resolve": {"github.com/miekg/dns"},
	// cmd/sipdispatch's sub-packages, one job each; cmd itself wires them
	// and is not checked. Only replica reaches into another one (source).
	cmdInternal + "webhook": {module + "dispatch", "github.com/prometheus/client_golang"},
	cmdInternal + "metrics": {module + "actors", module + "cluster", module + "dispatch", module + "sip", "github.com/prometheus/client_golang"},
	cmdInternal + "api":     {module + "actors", module + "cluster", module + "dispatch"},
	cmdInternal + "source": {module + "actors", module + "cluster", module + "dispatch",
		"github.com/go-sql-driver/mysql", "github.com/jackc/pgx/v5", "modernc.org/sqlite"},
	cmdInternal + "kamcfg": {module + "sip", "gopkg.in/yaml.v3"},
	// The GOMAXPROCS governor: the runtime and getrusage, nothing of the node.
	cmdInternal + "procs": {},
	cmdInternal + "replica": {module + "actors", module + "cluster", module + "dispatch", module + cmdInternal + "source",
		"github.com/prometheus/client_golang"},
}

// cmdInternal is the folder of cmd/sipdispatch's sub-packages.
const cmdInternal = "cmd/sipdispatch/internal/"

// banned standard-library imports per package: the pure core opens no sockets.
var banned = map[string][]string{
	"dispatch": {"net", "net/http", "os/exec", "sync"},
	"actors":   {"net", "net/http"},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// parseDir parses the imports of the non-test Go files of one directory.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ImportsOnly|parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		f.Name = ast.NewIdent(n) // remember the file for messages
		files = append(files, f)
	}
	return files
}

// packageDirs returns pkg and every directory below it that holds Go code,
// as slash paths relative to root (testdata is not code).
func packageDirs(t *testing.T, root, pkg string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(filepath.Join(root, pkg), func(path string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir // a package not written yet has no imports to check
		}
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func TestImportRules(t *testing.T) {
	root := repoRoot(t)
	checked := 0
	for top, ok := range allowed {
		for _, pkg := range packageDirs(t, root, top) {
			if nearest(pkg) != top {
				continue // a listed sub-package has rules of its own
			}
			files := parseDir(t, filepath.Join(root, pkg))
			checked += len(files)
			for _, f := range files {
				checkImports(t, top, pkg, f, ok)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no Go file found: the rules check nothing")
	}
}

// nearest is the listed package whose rules pkg follows: itself, else its
// nearest listed ancestor.
func nearest(pkg string) string {
	best := ""
	for top := range allowed {
		if (pkg == top || strings.HasPrefix(pkg, top+"/")) && len(top) > len(best) {
			best = top
		}
	}
	return best
}

func checkImports(t *testing.T, top, pkg string, f *ast.File, ok []string) {
	t.Helper()
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if (strings.HasPrefix(path, module+"cmd") || strings.HasPrefix(path, module+"integration")) &&
			!slices.Contains(ok, path) && !strings.HasPrefix(path, module+top+"/") {
			t.Errorf("%s/%s imports %s: nothing may import cmd or integration", pkg, f.Name.Name, path)
			continue
		}
		if !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") { // standard library
			for _, b := range banned[top] {
				if path == b {
					t.Errorf("%s/%s imports %s, which %s must not use", pkg, f.Name.Name, path, top)
				}
			}
			continue
		}
		// Inside its own tree (a sub-package and its parent) is allowed.
		good := path == module+top || strings.HasPrefix(path, module+top+"/")
		for _, p := range ok {
			if path == p || strings.HasPrefix(path, p+"/") || strings.HasPrefix(path, p) && strings.HasPrefix(p, "github.com/hashicorp/raft") {
				good = true
			}
		}
		if !good {
			t.Errorf("%s/%s imports %s: not allowed (allowed: %v)", pkg, f.Name.Name, path, ok)
		}
	}
}

// The core never reads the clock: time comes in as an argument.
func TestDispatchReadsNoClock(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "dispatch")
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(node ast.Node) bool {
			sel, ok := node.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" {
				switch sel.Sel.Name {
				case "Now", "Since", "Until", "Sleep", "After", "Tick", "NewTimer", "NewTicker", "AfterFunc":
					t.Errorf("%s: dispatch calls time.%s; pass time in instead", fset.Position(sel.Pos()), sel.Sel.Name)
				}
			}
			if _, ok := node.(*ast.GoStmt); ok {
				t.Errorf("%s: dispatch starts a goroutine", fset.Position(node.Pos()))
			}
			return true
		})
	}
}
