package cluster

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// levelWriter turns the text lines that raft (hclog) and memberlist
// (log.Logger) print, which start with a "[LEVEL]" tag, into slog records.
type levelWriter struct {
	log       *slog.Logger
	component string
}

var levelTags = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w *levelWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(p, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		level := slog.LevelInfo
		if i := bytes.IndexByte(line, '['); i >= 0 {
			for _, t := range levelTags {
				if bytes.HasPrefix(line[i:], []byte(t.tag)) {
					level = t.level
					line = bytes.TrimSpace(line[i+len(t.tag):])
					break
				}
			}
		}
		if w.log.Enabled(context.Background(), level) {
			w.log.Log(context.Background(), level, string(line), "component", w.component)
		}
	}
	return len(p), nil
}

// hclogFor returns an hclog.Logger for raft that writes through log.
func hclogFor(l *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if l.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	var out io.Writer = &levelWriter{log: l, component: name}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: out, Level: level, DisableTime: true})
}

// stdlogFor returns a log.Logger for memberlist that writes through l.
func stdlogFor(l *slog.Logger, name string) *log.Logger {
	return log.New(&levelWriter{log: l, component: name}, "", 0)
}
