package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// runHash prints Kamailio's dispatcher.hash for the values: the hash id and
// the slot it falls in among NSLOTS destinations.
func runHash(args []string, stdout, _ io.Writer) error {
	if len(args) < 2 || len(args) > 3 {
		return fmt.Errorf("%w: hash NSLOTS V1 [V2]", errUsage)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("%w: NSLOTS must be a positive integer, got %q", errUsage, args[0])
	}
	v2 := ""
	if len(args) == 3 {
		v2 = args[2]
	}
	h := dispatch.Hash(args[1], v2)
	fmt.Fprintf(stdout, "hashid: %d\nslot: %d\n", h, h%uint32(n))
	return nil
}

// runCheck parses a list file and prints its sets in selection order; every
// bad line is reported as file:line: reason and the exit code is 1.
func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	list := fs.String("list", "", "Kamailio-format list file to check")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *list == "" || fs.NArg() != 0 {
		return fmt.Errorf("%w: check -list FILE", errUsage)
	}
	f, err := os.Open(*list)
	if err != nil {
		return err
	}
	defer f.Close()
	sets, perr := dispatch.ParseList(f, *list)
	printSets(stdout, sets)
	return perr
}

func printSets(w io.Writer, sets []dispatch.Set) {
	for _, s := range sets {
		fmt.Fprintf(w, "set %d (%d destinations)\n", s.ID, len(s.Dests))
		for i, d := range s.Dests {
			fmt.Fprintf(w, "  %2d %-40s flags=%-2s priority=%d", i, d.URI, d.Flags.Letters(), d.Priority)
			if d.Attrs.Raw != "" {
				fmt.Fprintf(w, " attrs=%s", d.Attrs.Raw)
			}
			fmt.Fprintf(w, "  (%s)\n", d.Source)
		}
	}
}
