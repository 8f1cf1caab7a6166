package main

import (
	"flag"
	"fmt"
	"io"
	"os"

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

// dispatcherKeyKind tells the translator how the configuration takes a
// dispatcher modparam (the keys are config.go's).
func dispatcherKeyKind(name string) kamcfg.KeyKind {
	switch {
	case dispatcherKeys[name] || name == thresholdTypo:
		return kamcfg.KeyMapped
	case noopParams[name]:
		return kamcfg.KeyNoop
	}
	return kamcfg.KeyUnknown
}
