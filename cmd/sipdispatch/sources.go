package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// sources owns what the set actors run: the destinations as loaded from the
// list file or database table, in source order, plus runtime additions and removals. Reload,
// add and remove each build the new sets first and hand them to the registry
// in one Replace, so a failure of any kind leaves the running sets as they were.
type sources struct {
	c   *fileConfig
	reg *actors.Registry
	log *slog.Logger

	// mu serialises changes; dests is guarded by it.
	mu    sync.Mutex
	dests []dispatch.Destination // source order: list lines or table rows, then runtime adds
}

// loadDests reads the destination source: the database table when db_url is
// set, else the list file. With ds_load_mode 1 any bad line or row fails the
// load; with 0 bad ones are skipped with a warning each.
func loadDests(c *fileConfig, log *slog.Logger) ([]dispatch.Destination, error) {
	var (
		dests []dispatch.Destination
		err   error
	)
	if c.Dispatcher.DBURL != "" {
		dests, err = loadDB(context.Background(), &c.Dispatcher.Config, log)
	} else {
		dests, err = readListFile(c.Dispatcher.ListFile)
	}
	if err != nil {
		var le *dispatch.ListError
		if c.Dispatcher.LoadMode != 0 || !errors.As(err, &le) {
			return nil, err
		}
		for _, l := range le.Lines {
			log.Warn("skipped bad destination (ds_load_mode 0)", "err", l.Error())
		}
	}
	return dests, nil
}

// readListFile reads a list file in line order; a *dispatch.ListError comes
// with the good lines.
func readListFile(name string) ([]dispatch.Destination, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return dispatch.ReadList(fh, name)
}

// sourceName names the destination source in messages.
func (c *fileConfig) sourceName() string {
	if c.Dispatcher.DBURL != "" {
		return dbSourceName(&c.Dispatcher.Config)
	}
	return c.Dispatcher.ListFile
}

// reload re-reads the source and replaces the sets, keeping runtime state.
func (s *sources) reload(ctx context.Context) error {
	dests, err := loadDests(s.c, s.log)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reg.Replace(ctx, dispatch.BuildSets(dests)); err != nil {
		return err
	}
	s.dests = dests
	s.log.Info("destinations reloaded", "destinations", len(dests))
	return nil
}

// add inserts a destination at runtime (dispatcher.add), as if it were a new
// last line of the list. It is not written back to the file, and a reload
// drops it, as in Kamailio. In a cluster it applies to the committed sets, so
// additions through different nodes all survive.
func (s *sources) add(ctx context.Context, set int, uri string, flags dispatch.Flags, priority int, attrs string) error {
	d, err := dispatch.NewDestination(set, uri, flags, priority, attrs)
	if err != nil {
		return err
	}
	d.Source = "runtime"
	if err := s.reg.AddDest(ctx, d); err != nil {
		return err
	}
	s.log.Info("destination added", "set", set, "uri", uri)
	return nil
}

// remove deletes every destination with uri from set (dispatcher.remove).
func (s *sources) remove(ctx context.Context, set int, uri string) error {
	if err := s.reg.RemoveDest(ctx, set, uri); err != nil {
		return err
	}
	s.log.Info("destination removed", "set", set, "uri", uri)
	return nil
}
