package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
)

// examples is each command's example for its help (`sipdispatch help
// COMMAND`, `sipdispatch COMMAND -h`); a test checks every command has one.
var examples = map[string]string{
	"version":         "sipdispatch version",
	"hash":            "sipdispatch hash 8 alice@example.com    # the slot of a From user with 8 slots",
	"check":           "sipdispatch check -config /etc/sipdispatch/sipdispatch.yaml\nsipdispatch check -list dispatcher.list",
	"serve":           "sipdispatch serve -config /etc/sipdispatch/sipdispatch.yaml\nsipdispatch serve -list dispatcher.list -listen udp:127.0.0.1:5060 -api 127.0.0.1:9060",
	"certs":           "sipdispatch certs -dir /etc/sipdispatch/tls n1 n2 n3",
	"list":            "sipdispatch list\nsipdispatch list --json -api http://10.0.0.2:9060 -token-file /etc/sipdispatch/token",
	"set-state":       "sipdispatch set-state ip 1 sip:192.0.2.10:5060    # inactive + probing\nsipdispatch set-state a 1 all",
	"set-duid-state":  "sipdispatch set-duid-state d 1 gw-a",
	"reload":          "sipdispatch reload",
	"add":             "sipdispatch add 1 sip:192.0.2.12:5060 8 10 'duid=gw-c;weight=20'",
	"remove":          "sipdispatch remove 1 sip:192.0.2.12:5060",
	"load":            "sipdispatch load --set 1 --entries",
	"members":         "sipdispatch members -api http://10.0.0.2:9060",
	"raft":            "sipdispatch raft",
	"leave":           "sipdispatch leave -api http://10.0.0.3:9060",
	"top":             "sipdispatch top -interval 1s\nsipdispatch top -once -api http://10.0.0.2:9060",
	"import-kamailio": "sipdispatch import-kamailio /etc/kamailio/kamailio.cfg -o sipdispatch.yaml -list /etc/kamailio/dispatcher.list",
	"help":            "sipdispatch help serve",
	"completion":      "source <(sipdispatch completion bash)    # in ~/.bashrc\nsipdispatch completion zsh > \"${fpath[1]}/_sipdispatch\"",
}

// wantsHelp reports whether a command's arguments ask for its help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// commandHelp returns what the command's own flag set prints for -h: its
// usage line ("" when it prints none) and the rest (flag defaults, argument
// notes). Every command parses its flags before it does anything, so -h
// only prints.
func commandHelp(name string) (usage, rest string) {
	var buf bytes.Buffer
	commands[name].run([]string{"-h"}, io.Discard, &buf)
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "usage: "):
			usage = strings.TrimSpace(line)
		case strings.HasPrefix(line, "Usage of "), line == "":
		default:
			lines = append(lines, line)
		}
	}
	return usage, strings.Join(lines, "\n")
}

var flagLine = regexp.MustCompile(`(?m)^  (-[\w-]+)`)

// commandFlags lists the command's flags as "-name" (for completion).
func commandFlags(name string) []string {
	_, rest := commandHelp(name)
	var flags []string
	for _, m := range flagLine.FindAllStringSubmatch(rest, -1) {
		flags = append(flags, m[1])
	}
	return flags
}

// printHelp prints a command's help: summary, usage, flags and example.
func printHelp(w io.Writer, name string) {
	usage, rest := commandHelp(name)
	if usage == "" {
		usage = "usage: sipdispatch " + name
		if rest != "" {
			usage += " [flags]"
		}
		// A summary "ARGS: what it does" names the arguments first.
		if args, _, ok := strings.Cut(commands[name].summary, ": "); ok && args != "" && (args[0] == '[' || unicode.IsUpper(rune(args[0]))) && !strings.HasPrefix(args, "[-") {
			usage += " " + args
		}
	}
	fmt.Fprintf(w, "sipdispatch %s — %s\n\n%s\n", name, commands[name].summary, usage)
	if rest != "" {
		fmt.Fprintf(w, "%s\n", rest)
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n", strings.ReplaceAll(examples[name], "\n", "\n  "))
}
