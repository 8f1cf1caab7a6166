package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// runCompletion is `completion bash|zsh`: a completion script for the
// commands and each command's flags, generated from the command table and
// the commands' own flag sets (docs/operations.md, "Shell completion").
func runCompletion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("completion", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: sipdispatch completion bash|zsh") }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("%w: help requested", errUsage)
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: completion bash|zsh", errUsage)
	}
	switch fs.Arg(0) {
	case "bash":
		_, err := io.WriteString(stdout, bashCompletion())
		return err
	case "zsh":
		_, err := io.WriteString(stdout, zshCompletion())
		return err
	}
	return fmt.Errorf("%w: completion bash|zsh, not %q", errUsage, fs.Arg(0))
}

// completionArgs are the words a command takes as its first argument, where
// there is a fixed set of them.
func completionArgs(name string) []string {
	switch name {
	case "completion":
		return []string{"bash", "zsh"}
	case "help":
		return commandNames()
	case "set-state", "set-duid-state":
		return []string{"a", "ap", "i", "ip", "t", "tp", "d"}
	}
	return nil
}

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func bashCompletion() string {
	var b strings.Builder
	b.WriteString(`# bash completion for sipdispatch (sipdispatch completion bash)
_sipdispatch() {
  local cur=${COMP_WORDS[COMP_CWORD]} flags="" args=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "` + strings.Join(commandNames(), " ") + `" -- "$cur"))
    return
  fi
  case ${COMP_WORDS[1]} in
`)
	for _, n := range commandNames() {
		fmt.Fprintf(&b, "    %s) flags=%q; args=%q ;;\n", n, strings.Join(commandFlags(n), " "), strings.Join(completionArgs(n), " "))
	}
	b.WriteString(`  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [ -n "$args" ] && [ "$COMP_CWORD" -eq 2 ]; then
    COMPREPLY=($(compgen -W "$args" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _sipdispatch sipdispatch
`)
	return b.String()
}

func zshCompletion() string {
	var b strings.Builder
	b.WriteString(`#compdef sipdispatch
# zsh completion for sipdispatch (sipdispatch completion zsh)
_sipdispatch() {
  local -a cmds flags args
  cmds=(
`)
	for _, n := range commandNames() {
		// _describe splits "name:description" at the first unescaped colon.
		fmt.Fprintf(&b, "    %s\n", zshQuote(n+":"+strings.ReplaceAll(commands[n].summary, ":", `\:`)))
	}
	b.WriteString(`  )
  if (( CURRENT == 2 )); then
    _describe 'command' cmds
    return
  fi
  case $words[2] in
`)
	for _, n := range commandNames() {
		fmt.Fprintf(&b, "    %s) flags=(%s); args=(%s) ;;\n", n, strings.Join(commandFlags(n), " "), strings.Join(completionArgs(n), " "))
	}
	b.WriteString(`  esac
  if [[ $PREFIX == -* ]]; then
    compadd -a flags
  elif (( CURRENT == 3 && ${#args} > 0 )); then
    compadd -a args
  else
    _files
  fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _sipdispatch "$@"
else
  compdef _sipdispatch sipdispatch
fi
`)
	return b.String()
}

// zshQuote quotes s for a zsh word in single quotes.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
