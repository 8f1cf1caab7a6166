// Package kamcfg translates a Kamailio configuration file into a sipdispatch
// configuration (docs/kamailio-compat.md, "Migrating with import-kamailio").
// It reads what a dispatcher config says — the dispatcher modparams, tm's
// timers, listen= and advertise, and the ds_* patterns of request_route and
// failure_route — and reports what it translated and what it could not, with
// the Kamailio file:line. It is not a Kamailio interpreter: statements it
// does not know are skipped, and the report says so when that matters.
package kamcfg

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// pos is a place in the Kamailio configuration.
type pos struct {
	file string
	line int
}

func (p pos) String() string { return fmt.Sprintf("%s:%d", p.file, p.line) }

// srcLine is one line after preprocessing, with where it came from.
type srcLine struct {
	pos  pos
	text string
}

// preprocess reads path and applies the directives a dispatcher config uses:
// #!define (with its value substituted into later lines), #!ifdef, #!ifndef,
// #!else, #!endif, and include_file/import_file (a missing include is
// reported, not fatal). Comments are removed.
func preprocess(path string, defines map[string]string, r *Report, depth int) ([]srcLine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	name := path
	var out []srcLine
	var skip []bool // one per open #!ifdef: whether its lines are skipped
	skipping := func() bool {
		for _, s := range skip {
			if s {
				return true
			}
		}
		return false
	}
	inBlockComment := false
	for i, raw := range strings.Split(string(data), "\n") {
		p := pos{name, i + 1}
		line := strings.TrimRight(raw, "\r")
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#!") || strings.HasPrefix(trimmed, "!!") {
			fields := strings.Fields(trimmed[2:])
			if len(fields) == 0 {
				continue
			}
			switch fields[0] {
			case "ifdef", "ifndef":
				_, def := defines[arg(fields, 1)]
				skip = append(skip, def != (fields[0] == "ifdef"))
			case "else":
				if len(skip) > 0 {
					skip[len(skip)-1] = !skip[len(skip)-1]
				}
			case "endif":
				if len(skip) > 0 {
					skip = skip[:len(skip)-1]
				}
			case "define", "trydef", "redefine":
				if skipping() || len(fields) < 2 {
					continue
				}
				if _, ok := defines[fields[1]]; ok && fields[0] == "trydef" {
					continue
				}
				val := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(trimmed[2+len(fields[0]):]), fields[1]))
				defines[fields[1]] = substitute(val, defines)
			case "KAMAILIO", "SER", "OPENSER", "ALL", "MAXCOMPAT":
			default:
				if !skipping() {
					r.add(p, false, "#!"+fields[0], "preprocessor directive not supported; ignored")
				}
			}
			continue
		}
		if skipping() {
			continue
		}
		line, inBlockComment = stripComments(line, inBlockComment)
		if strings.TrimSpace(line) == "" {
			continue
		}
		line = substitute(line, defines)
		if inc, ok := includeOf(line); ok {
			if depth > 8 {
				return nil, fmt.Errorf("%s: includes nested too deep", p)
			}
			incPath := inc
			if !filepath.IsAbs(incPath) {
				incPath = filepath.Join(filepath.Dir(path), inc)
			}
			lines, err := preprocess(incPath, defines, r, depth+1)
			if err != nil {
				r.add(p, false, "include "+inc, fmt.Sprintf("not read (%v); its contents are not translated", err))
				continue
			}
			out = append(out, lines...)
			continue
		}
		out = append(out, srcLine{p, line})
	}
	return out, nil
}

func arg(fields []string, i int) string {
	if i < len(fields) {
		return fields[i]
	}
	return ""
}

// includeOf recognises include_file "x" and import_file "x".
func includeOf(line string) (string, bool) {
	t := strings.TrimSpace(line)
	for _, kw := range []string{"include_file", "import_file"} {
		if rest, ok := strings.CutPrefix(t, kw); ok {
			return strings.Trim(strings.TrimSpace(rest), `"'`), true
		}
	}
	return "", false
}

// stripComments removes # and // line comments and /* */ comments outside
// strings.
func stripComments(line string, inBlock bool) (string, bool) {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inBlock:
			if c == '*' && i+1 < len(line) && line[i+1] == '/' {
				inBlock = false
				i++
			}
		case quote != 0:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(line) {
				b.WriteByte(line[i+1])
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
			b.WriteByte(c)
		case c == '#':
			return b.String(), false
		case c == '/' && i+1 < len(line) && line[i+1] == '/':
			return b.String(), false
		case c == '/' && i+1 < len(line) && line[i+1] == '*':
			inBlock = true
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), inBlock
}

// substitute replaces defined names (whole identifiers outside strings) by
// their values.
func substitute(line string, defines map[string]string) string {
	if len(defines) == 0 {
		return line
	}
	var b strings.Builder
	var quote byte
	for i := 0; i < len(line); {
		c := line[i]
		if quote != 0 {
			b.WriteByte(c)
			if c == quote {
				quote = 0
			}
			i++
			continue
		}
		if c == '"' || c == '\'' {
			quote = c
			b.WriteByte(c)
			i++
			continue
		}
		if isIdentStart(c) && (i == 0 || !isIdent(line[i-1]) && line[i-1] != '$') {
			j := i
			for j < len(line) && isIdent(line[j]) {
				j++
			}
			if v, ok := defines[line[i:j]]; ok && v != "" {
				b.WriteString(v)
			} else {
				b.WriteString(line[i:j])
			}
			i = j
			continue
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

func isIdentStart(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isIdent(c byte) bool      { return isIdentStart(c) || '0' <= c && c <= '9' }

// token is one lexical token of the script.
type token struct {
	pos  pos
	kind byte   // 'i' identifier (with $vars and dots), 's' string, 'n' number, 'p' punctuation
	text string // a string's text without quotes
}

// lex splits the preprocessed lines into tokens.
func lex(lines []srcLine) []token {
	var toks []token
	for _, l := range lines {
		s := l.text
		for i := 0; i < len(s); {
			c := s[i]
			switch {
			case c == ' ' || c == '\t':
				i++
			case c == '"' || c == '\'':
				j := i + 1
				var b strings.Builder
				for j < len(s) && s[j] != c {
					if s[j] == '\\' && j+1 < len(s) {
						b.WriteByte(s[j])
						j++
					}
					b.WriteByte(s[j])
					j++
				}
				toks = append(toks, token{l.pos, 's', b.String()})
				i = j + 1
			case '0' <= c && c <= '9':
				j := i
				for j < len(s) && (isIdent(s[j]) || s[j] == '.' || s[j] == ':') {
					j++
				}
				toks = append(toks, token{l.pos, 'n', s[i:j]})
				i = j
			case isIdentStart(c) || c == '$':
				j := i + 1
				if c == '$' && j < len(s) && s[j] == '(' {
					j = matchParen(s, j)
				} else {
					for j < len(s) && (isIdent(s[j]) || s[j] == '.') {
						j++
					}
					if c == '$' && j < len(s) && s[j] == '(' {
						j = matchParen(s, j)
					}
				}
				toks = append(toks, token{l.pos, 'i', s[i:j]})
				i = j
			default:
				n := 1
				if i+1 < len(s) {
					switch s[i : i+2] {
					case "==", "!=", "=~", "!~", "&&", "||", "<=", ">=", "+=":
						n = 2
					}
				}
				toks = append(toks, token{l.pos, 'p', s[i : i+n]})
				i += n
			}
		}
	}
	return toks
}

// matchParen returns the index after the parenthesis matching s[i] == '('.
func matchParen(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}

// stmt is one statement of a route block.
type stmt struct {
	pos  pos
	cond []token // if: the condition's tokens
	then []stmt  // if: the branch taken; a plain block: its statements
	els  []stmt  // if: the else branch
	call string  // a call statement: the function name ("" for others)
	args []token // its argument tokens, commas removed
	kind byte    // 'i' if, 'c' call, 'b' block, 'a' assignment ($x = args), 'o' other
	text string  // other: the statement's first token
}

// parser reads statements from tokens.
type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return token{}
}

func (p *parser) next() token { t := p.peek(); p.i++; return t }

func (p *parser) is(kind byte, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}

// block parses statements up to the closing '}' (consumed).
func (p *parser) block() []stmt {
	var out []stmt
	for p.i < len(p.toks) && !p.is('p', "}") {
		out = append(out, p.statement())
	}
	p.next()
	return out
}

// balanced returns the tokens between an opening '(' (current) and its
// match, both consumed.
func (p *parser) balanced() []token {
	if !p.is('p', "(") {
		return nil // a truncated statement: nothing to take
	}
	start := p.i
	depth := 0
	for p.i < len(p.toks) {
		t := p.next()
		if t.kind == 'p' && t.text == "(" {
			depth++
		} else if t.kind == 'p' && t.text == ")" {
			depth--
			if depth == 0 {
				return p.toks[start+1 : p.i-1]
			}
		}
	}
	return p.toks[start+1:]
}

func (p *parser) statement() stmt {
	t := p.next()
	switch {
	case t.kind == 'p' && t.text == "{":
		return stmt{pos: t.pos, kind: 'b', then: p.block()}
	case t.kind == 'p' && t.text == ";":
		return stmt{pos: t.pos, kind: 'o', text: ";"}
	case t.kind == 'i' && t.text == "if":
		s := stmt{pos: t.pos, kind: 'i', cond: p.balanced()}
		s.then = p.branch()
		if p.is('i', "else") {
			p.next()
			s.els = p.branch()
		}
		return s
	case t.kind == 'i' && (t.text == "switch" || t.text == "while"):
		p.balanced()
		if p.is('p', "{") {
			p.next()
			p.block()
		}
		return stmt{pos: t.pos, kind: 'o', text: t.text}
	case t.kind == 'i' && p.is('p', "("):
		s := stmt{pos: t.pos, kind: 'c', call: t.text}
		for _, a := range p.balanced() {
			if !(a.kind == 'p' && a.text == ",") {
				s.args = append(s.args, a)
			}
		}
		p.skipTo()
		return s
	}
	if t.kind == 'i' && strings.HasPrefix(t.text, "$") && p.is('p', "=") {
		p.next()
		s := stmt{pos: t.pos, kind: 'a', text: t.text}
		for p.i < len(p.toks) && !p.is('p', ";") && !p.is('p', "}") {
			s.args = append(s.args, p.next())
		}
		p.skipTo()
		return s
	}
	p.i--
	s := stmt{pos: t.pos, kind: 'o', text: t.text}
	p.skipTo()
	return s
}

// branch parses an if branch: a block or one statement.
func (p *parser) branch() []stmt {
	if p.is('p', "{") {
		p.next()
		return p.block()
	}
	return []stmt{p.statement()}
}

// skipTo consumes up to and including the next ';' at this level (or stops
// before a '}').
func (p *parser) skipTo() {
	depth := 0
	for p.i < len(p.toks) {
		t := p.peek()
		if t.kind == 'p' {
			switch t.text {
			case "(":
				depth++
			case ")":
				depth--
			case ";":
				if depth <= 0 {
					p.i++
					return
				}
			case "}":
				if depth <= 0 {
					return
				}
			}
		}
		p.i++
	}
}

// script is the parsed configuration: top-level assignments and modparams
// and the route blocks by kind and name.
type script struct {
	globals   []global
	modparams []modparam
	routes    map[string][]stmt // "request", "route:NAME", "failure:NAME", ...
	routePos  map[string]pos
}

type global struct {
	pos  pos
	name string
	toks []token // the value's tokens, up to the end of the line
}

type modparam struct {
	pos          pos
	module, name string
	value        string
	isNumber     bool
}

// parseScript reads top-level statements: assignments (listen=...),
// loadmodule, modparam and route blocks.
func parseScript(toks []token) *script {
	s := &script{routes: map[string][]stmt{}, routePos: map[string]pos{}}
	p := &parser{toks: toks}
	for p.i < len(p.toks) {
		t := p.next()
		switch {
		case t.kind == 'i' && t.text == "modparam" && p.is('p', "("):
			var args []token
			for _, a := range p.balanced() {
				if !(a.kind == 'p' && a.text == ",") {
					args = append(args, a)
				}
			}
			if len(args) >= 3 {
				v := args[2]
				s.modparams = append(s.modparams, modparam{pos: t.pos, module: args[0].text, name: args[1].text,
					value: v.text, isNumber: v.kind == 'n'})
			}
		case t.kind == 'i' && strings.HasSuffix(t.text, "route") || t.kind == 'i' && t.text == "route":
			kind := strings.TrimSuffix(t.text, "_route")
			if t.text == "route" {
				kind = "route"
			}
			name := ""
			if p.is('p', "[") {
				p.next()
				for !p.is('p', "]") && p.i < len(p.toks) {
					name += p.next().text
				}
				p.next()
			}
			if !p.is('p', "{") {
				continue
			}
			p.next()
			key := kind
			if kind == "route" && name == "" {
				key = "request"
			} else if name != "" {
				key = kind + ":" + name
			}
			s.routePos[key] = t.pos
			s.routes[key] = p.block()
		case t.kind == 'i' && p.is('p', "="):
			p.next()
			g := global{pos: t.pos, name: t.text}
			for p.i < len(p.toks) && p.peek().pos.line == t.pos.line && p.peek().pos.file == t.pos.file {
				g.toks = append(g.toks, p.next())
			}
			s.globals = append(s.globals, g)
		}
	}
	return s
}
