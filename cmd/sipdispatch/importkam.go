package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/kamcfg"
)

// runImportKamailio translates a Kamailio configuration into a sipdispatch
// one (docs/kamailio-compat.md, "Migrating with import-kamailio"): the YAML
// goes to -o (else stdout), the report of what was and was not translated to
// stderr. With -o the written file is validated as `check` would.
func runImportKamailio(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("import-kamailio", flag.ContinueOnError)
	flags.SetOutput(stderr)
	out := flags.String("o", "", "write the sipdispatch YAML here (default stdout)")
	list := flags.String("list", "", "list file to name in dispatcher.list_file (replaces the config's list_file or db_url)")
	if err := flags.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// The file may come before the flags: import-kamailio kamailio.cfg -o out.yaml.
	var cfg string
	if flags.NArg() > 0 {
		cfg = flags.Arg(0)
		if err := flags.Parse(flags.Args()[1:]); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if cfg == "" || flags.NArg() != 0 {
		return fmt.Errorf("%w: import-kamailio KAMAILIO.CFG [-o OUT.yaml] [-list FILE]", errUsage)
	}
	res, err := kamcfg.Translate(cfg, kamcfg.Options{ListFile: *list, DispatcherKey: dispatcherKeyKind})
	if err != nil {
		return err
	}
	res.Report.WriteTo(stderr)
	if *out == "" {
		_, err := stdout.Write(res.YAML)
		return err
	}
	if err := os.WriteFile(*out, res.YAML, 0o644); err != nil {
		return err
	}
	c, err := loadConfig(*out)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		return fmt.Errorf("the written %s does not pass check; fix it by hand:\n%w", *out, err)
	}
	fmt.Fprintf(stderr, "wrote %s; check it with: sipdispatch check -config %s\n", *out, *out)
	return nil
}

// dispatcherKeyKind asks the configuration loader how it takes
// `dispatcher: {name: value}`: without a warning, with one (a key accepted
// for compatibility that has no effect), or refused as an unknown key. The
// loader owns the keys, so a key it learns is translated with no change here.
func dispatcherKeyKind(name string, value any) kamcfg.KeyKind {
	doc, err := yaml.Marshal(map[string]any{"dispatcher": map[string]any{name: value}})
	if err != nil {
		return kamcfg.KeyUnknown
	}
	dir, err := os.MkdirTemp("", "sipdispatch-import-")
	if err != nil {
		return kamcfg.KeyUnknown
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "probe.yaml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		return kamcfg.KeyUnknown
	}
	c, err := loadConfig(path)
	switch {
	case err != nil && strings.Contains(err.Error(), "unknown key"):
		return kamcfg.KeyUnknown
	case len(c.Warnings()) > 0:
		return kamcfg.KeyNoop
	}
	return kamcfg.KeyMapped
}
