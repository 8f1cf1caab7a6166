// Command sipdispatch is the SIP dispatcher: `serve` runs a node, the other
// subcommands validate configuration or talk to a running node (docs/operations.md, "Admin CLI").
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
)

// Set by the Makefile with -ldflags.
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes (docs/operations.md, "Admin CLI").
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// errUsage marks a command-line mistake: exit 2 instead of 1.
var errUsage = errors.New("usage")

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"version":         {"print version, commit and Go version", runVersion},
	"hash":            {"NSLOTS V1 [V2]: Kamailio's dispatcher.hash, computed locally", runHash},
	"check":           {"[-config FILE] [-list FILE]: validate config and destinations, print the sets in selection order", runCheck},
	"serve":           {"[-config FILE] [flags]: run a node (SIP proxy + management API)", runServe},
	"certs":           {"[-dir DIR] [-days N] NODE-NAME...: CA and node certificates for cluster.raft.tls", runCerts},
	"import-kamailio": {"KAMAILIO.CFG [-o OUT.yaml] [-list FILE]: translate a Kamailio dispatcher config, with a report", runImportKamailio},

	// Admin commands (admin.go) call a running node's management API.
	"list":           {"[--json]: the running node's destination sets (dispatcher.list)", runList},
	"set-state":      {"STATE SET URI|all: set a destination's state (a, i, t, d, +p)", runSetState},
	"set-duid-state": {"STATE SET DUID: set the state of the destination with this duid", runSetDUIDState},
	"reload":         {"reload the destination source", runReload},
	"add":            {"SET URI [FLAGS [PRIORITY [ATTRS]]]: add a destination at runtime", runAdd},
	"remove":         {"SET URI: remove a destination at runtime", runRemove},
	"load":           {"[--set N]: call load per destination", runLoad},
	"members":        {"gossip members of the cluster with their state", runMembers},
	"raft":           {"raft state: leader, term, indexes, peers", runRaft},
	"leave":          {"the node leaves the cluster for good, then exits", runLeave},

	"top": {"[-interval D] [-once]: live view of a node's sets, destinations, load and rates", runTop},
}

// init adds the commands that read the command table themselves (help.go,
// completion.go), which the table's own initializer cannot name.
func init() {
	commands["help"] = command{"[COMMAND]: this list, or a command's flags and an example", runHelp}
	commands["completion"] = command{"bash|zsh: shell completion script for the commands and their flags", runCompletion}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || (args[0] == "help" && len(args) == 1) {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sipdispatch: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	if wantsHelp(args[1:]) {
		printHelp(stdout, args[0])
		return exitOK
	}
	if err := cmd.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "sipdispatch %s: %v\n", args[0], err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "sipdispatch %s: %v\n", args[0], err)
		return exitError
	}
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: sipdispatch COMMAND [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\n`sipdispatch help COMMAND` or `sipdispatch COMMAND -h`: the command's flags and an example.")
}

// runHelp is `help COMMAND`.
func runHelp(args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: help [COMMAND]", errUsage)
	}
	if _, ok := commands[args[0]]; !ok {
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	printHelp(stdout, args[0])
	return nil
}

func runVersion(args []string, stdout, _ io.Writer) error {
	if len(args) != 0 {
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	fmt.Fprintf(stdout, "sipdispatch %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
