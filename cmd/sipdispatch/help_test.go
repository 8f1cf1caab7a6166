package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every command answers -h, --help and `help COMMAND` with exit 0, a usage
// line, its flags and an example that runs the command itself.
func TestEveryCommandHasHelpWithExample(t *testing.T) {
	for _, name := range commandNames() {
		_, rest := commandHelp(name)
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			code, out, errs := runCLI(args...)
			if code != exitOK {
				t.Errorf("%v: exit %d, stderr %q", args, code, errs)
				continue
			}
			if !strings.Contains(out, "\nusage: sipdispatch "+name) {
				t.Errorf("%v prints no usage line:\n%s", args, out)
			}
			_, example, ok := strings.Cut(out, "\nExample:\n")
			if !ok || !strings.Contains(example, "sipdispatch "+name) {
				t.Errorf("%v prints no example of the command:\n%s", args, out)
			}
			if rest != "" && !strings.Contains(out, rest) {
				t.Errorf("%v lacks the command's flags %q:\n%s", args, rest, out)
			}
		}
	}
	// The flags come from the commands' own flag sets.
	if f := commandFlags("serve"); !slices.Contains(f, "-config") || !slices.Contains(f, "-listen") {
		t.Errorf("serve flags %v", f)
	}
	if f := commandFlags("load"); !slices.Equal(f, []string{"-api", "-entries", "-json", "-set", "-token-file"}) {
		t.Errorf("load flags %v", f)
	}
	// -h after the arguments asks for help too; an unknown command does not get any.
	if code, out, _ := runCLI("set-state", "i", "1", "all", "-h"); code != exitOK || !strings.Contains(out, "Example:") {
		t.Errorf("set-state … -h: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI("help", "nope"); code != exitUsage {
		t.Errorf("help nope: exit %d, want %d", code, exitUsage)
	}
}

// The bash script, sourced in a real bash, completes commands, a command's
// flags and fixed first arguments.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	code, script, errs := runCLI("completion", "bash")
	if code != exitOK {
		t.Fatalf("completion bash: exit %d %s", code, errs)
	}
	file := filepath.Join(t.TempDir(), "sipdispatch.bash")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		q := make([]string, len(words))
		for i, w := range words {
			q[i] = "'" + w + "'"
		}
		sh := `source "$1"; COMP_WORDS=(` + strings.Join(q, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _sipdispatch; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "-c", sh, "bash", file).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"sipdispatch", "se"}, "serve set-duid-state set-state"},
		{[]string{"sipdispatch", "t"}, "top"},
		{[]string{"sipdispatch", "serve", "-c"}, "-config"},
		{[]string{"sipdispatch", "top", "-"}, "-api -interval -once -token-file"},
		{[]string{"sipdispatch", "completion", ""}, "bash zsh"},
		{[]string{"sipdispatch", "set-state", "i"}, "i ip"},
		{[]string{"sipdispatch", "help", "lea"}, "leave"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("complete %q: %q, want %q", tc.words, got, tc.want)
		}
	}
}

// The zsh script runs in a real zsh: with the completion system's builtins
// replaced by functions that print what they are given, it offers the
// commands with their summaries, a command's flags and fixed arguments.
func TestCompletionZsh(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		if testing.Short() {
			t.Skip("zsh not installed")
		}
		t.Fatalf("zsh not installed (.ci/setup installs it): %v", err)
	}
	code, script, errs := runCLI("completion", "zsh")
	if code != exitOK {
		t.Fatalf("completion zsh: exit %d %s", code, errs)
	}
	if !strings.HasPrefix(script, "#compdef sipdispatch\n") {
		t.Errorf("zsh script does not start with #compdef:\n%s", script)
	}
	file := filepath.Join(t.TempDir(), "_sipdispatch")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(prefix string, words ...string) string {
		t.Helper()
		sh := `compdef() { print -r -- "compdef $*" }
_describe() { local -a a; a=("${(@P)2}"); print -rl -- "${a[@]}" }
compadd() { local -a a; a=("${(@P)2}"); print -r -- "${a[*]}" }
_files() { print -r -- files }
source "$1"; shift
words=("$@"); CURRENT=$#; PREFIX=` + "'" + prefix + "'" + `
_sipdispatch`
		out, err := exec.Command(zsh, append([]string{"-f", "-c", sh, "zsh", file}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("", "sipdispatch", ""); !strings.Contains(got, "compdef _sipdispatch sipdispatch") ||
		!strings.Contains(got, `serve:[-config FILE] [flags]\: run a node`) || !strings.Contains(got, "top:") {
		t.Errorf("commands:\n%s", got)
	}
	if got := complete("-", "sipdispatch", "check", "-"); !strings.HasSuffix(got, "-config -list") {
		t.Errorf("check flags: %q", got)
	}
	if got := complete("", "sipdispatch", "completion", ""); !strings.HasSuffix(got, "bash zsh") {
		t.Errorf("completion args: %q", got)
	}
	if got := complete("", "sipdispatch", "check", "-config", ""); !strings.HasSuffix(got, "files") {
		t.Errorf("check -config value: %q", got)
	}
}
