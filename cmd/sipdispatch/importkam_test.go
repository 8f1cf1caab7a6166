package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/kamcfg"
)

// The fixtures of integration/testdata/kamimport are real-world-style
// Kamailio configs; import-kamailio must turn each into a file that passes
// the configuration's validation (the command checks what it wrote).
func TestImportKamailioFixtures(t *testing.T) {
	fixtures, err := filepath.Glob("../../integration/testdata/kamimport/*.cfg")
	if err != nil || len(fixtures) < 3 {
		t.Fatalf("want at least 3 fixtures, found %v (%v)", fixtures, err)
	}
	for _, f := range fixtures {
		t.Run(filepath.Base(f), func(t *testing.T) {
			dir := t.TempDir()
			list := filepath.Join(dir, "dispatcher.list")
			if err := os.WriteFile(list, []byte("1 sip:192.0.2.1:5060 0 0\n1 sip:192.0.2.2:5060 0 0\n2 sip:192.0.2.3:5060 0 0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.yaml")
			var stdout, stderr strings.Builder
			if code := run([]string{"import-kamailio", f, "-list", list, "-o", out}, &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), ": translated: ds_select_dst(") {
				t.Errorf("the report names no translated ds_select_dst:\n%s", stderr.String())
			}
			c, err := loadConfig(out)
			if err == nil {
				err = c.Validate()
			}
			if err != nil {
				t.Fatalf("the written config does not validate: %v", err)
			}
			if len(c.Routes) == 0 {
				t.Fatalf("no routes written")
			}
		})
	}
}

func TestImportKamailioUsage(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"import-kamailio"}, &stdout, &stderr); code != exitUsage {
		t.Fatalf("no file: exit %d, want %d", code, exitUsage)
	}
	if code := run([]string{"import-kamailio", "/nonexistent.cfg"}, &stdout, &stderr); code != exitError {
		t.Fatalf("missing file: exit %d, want %d", code, exitError)
	}
}

// The translator learns the dispatcher keys from the configuration loader.
func TestDispatcherKeyKind(t *testing.T) {
	for _, tt := range []struct {
		name  string
		value any
		want  kamcfg.KeyKind
	}{
		{"flags", 2, kamcfg.KeyMapped},
		{"hash_pvar", "$ci", kamcfg.KeyMapped},
		{thresholdTypo, 3, kamcfg.KeyMapped},
		{"xavp_dst", "_dsdst_", kamcfg.KeyNoop},
		{"force_dst", 1, kamcfg.KeyNoop},
		{"force_dst", 0, kamcfg.KeyMapped},
		{"no_such_param", 1, kamcfg.KeyUnknown},
	} {
		if got := dispatcherKeyKind(tt.name, tt.value); got != tt.want {
			t.Errorf("%s: %v: got %v, want %v", tt.name, tt.value, got, tt.want)
		}
	}
}
