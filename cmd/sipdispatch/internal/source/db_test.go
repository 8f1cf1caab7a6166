package source

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// The database tests run against the real servers of the machine (.ci/run
// starts them): MariaDB and PostgreSQL on 127.0.0.1, and SQLite files in a
// temporary directory. A server that is not running fails the test.

const (
	mysqlAdminDSN = "root@tcp(127.0.0.1:3306)/test"
	mysqlURL      = "mysql://root@127.0.0.1:3306/test"
	postgresURL   = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	testPassword  = "s3cret-Pw9"
)

var discardLog = slog.New(slog.DiscardHandler)

// dbBackend is one database the tests create tables in.
type dbBackend struct {
	name  string
	url   string  // dispatcher.db_url for sipdispatch
	admin *sql.DB // the test's own connection, for DDL and DML
	idDDL string  // the auto-increment id column of Kamailio's schema
}

var backendNames = []string{"mysql", "postgres", "sqlite"}

// openBackend connects to a database server, failing the test with a clear
// message when it does not answer.
func openBackend(t *testing.T, name string) *dbBackend {
	t.Helper()
	b := &dbBackend{name: name}
	var (
		err  error
		what string
	)
	switch name {
	case "mysql":
		what = "MariaDB at 127.0.0.1:3306 (user root, no password, database test)"
		b.url, b.idDDL = mysqlURL, "INT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL"
		b.admin, err = sql.Open("mysql", mysqlAdminDSN)
	case "postgres":
		what = "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database test)"
		b.url, b.idDDL = postgresURL, "SERIAL PRIMARY KEY NOT NULL"
		b.admin, err = sql.Open("pgx", postgresURL)
	case "sqlite":
		what = "SQLite file"
		path := filepath.Join(t.TempDir(), "dispatcher.db")
		b.url, b.idDDL = "sqlite://"+path, "INTEGER PRIMARY KEY NOT NULL"
		b.admin, err = sql.Open("sqlite", path)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { b.admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.admin.PingContext(ctx); err != nil {
		t.Fatalf("%s is not reachable (.ci/run starts it): %v", what, err)
	}
	return b
}

// forEachBackend runs f once per database, each in its own subtest.
func forEachBackend(t *testing.T, f func(t *testing.T, b *dbBackend)) {
	for _, name := range backendNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, openBackend(t, name))
		})
	}
}

// v4Columns are the columns of Kamailio's version-4 table after id.
const v4Columns = `setid INTEGER DEFAULT 0 NOT NULL,
	destination VARCHAR(192) DEFAULT '' NOT NULL,
	flags INTEGER DEFAULT 0 NOT NULL,
	priority INTEGER DEFAULT 0 NOT NULL,
	attrs VARCHAR(128) DEFAULT '' NOT NULL,
	description VARCHAR(64) DEFAULT '' NOT NULL`

// createTable makes a uniquely named table (so parallel runs never collide)
// with an id column and cols, and drops it when the test ends.
func (b *dbBackend) createTable(t *testing.T, cols string) string {
	t.Helper()
	name := fmt.Sprintf("dispatcher_t%016x", rand.Uint64())
	b.exec(t, "CREATE TABLE %s (id %s, %s)", name, b.idDDL, cols)
	t.Cleanup(func() {
		if _, err := b.admin.Exec("DROP TABLE " + name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return name
}

func (b *dbBackend) exec(t *testing.T, format string, args ...any) {
	t.Helper()
	q := fmt.Sprintf(format, args...)
	if _, err := b.admin.Exec(q); err != nil {
		t.Fatalf("%s: %s: %v", b.name, q, err)
	}
}

// config is the dispatcher configuration reading table from b.
func (b *dbBackend) config(table string) dispatch.Config {
	c := dispatch.DefaultConfig()
	c.DBURL, c.TableName = b.url, table
	return c
}

func uris(dests []dispatch.Destination) []string {
	out := make([]string, len(dests))
	for i, d := range dests {
		out[i] = d.URI
	}
	return out
}

func TestDBLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		tbl := b.createTable(t, v4Columns)
		// Inserted out of id order: the load must follow id, not insertion.
		b.exec(t, `INSERT INTO %s (id, setid, destination, flags, priority, attrs, description) VALUES
			(30, 1, 'sip:10.0.0.3:5060', 0, 0, 'duid=c', 'third'),
			(10, 1, 'sip:10.0.0.1:5060', 8, 0, 'duid=a;weight=50', 'first'),
			(20, 1, '10.0.0.2', 0, 5, '', ''),
			(40, 2, 'sips:[2001:db8::1]:5061;transport=tls', 32, -1, 'socket=udp:127.0.0.1:5060;my=x', '')`, tbl)
		cfg := b.config(tbl)
		dests, err := LoadDB(context.Background(), &cfg, discardLog)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"sip:10.0.0.1:5060", "sip:10.0.0.2", "sip:10.0.0.3:5060", "sips:[2001:db8::1]:5061;transport=tls"}
		if got := uris(dests); !slices.Equal(got, want) {
			t.Fatalf("uris %q, want %q", got, want)
		}
		a, gw2, v6 := dests[0], dests[1], dests[3]
		if a.Source != tbl+":10" || a.Flags != dispatch.FlagProbing || a.Attrs.DUID != "a" || a.Attrs.Weight != 50 || a.SetID != 1 {
			t.Errorf("row 10 = %+v", a)
		}
		if gw2.Priority != 5 || gw2.Host != "10.0.0.2" || gw2.Source != tbl+":20" {
			t.Errorf("row 20 = %+v", gw2)
		}
		if v6.SetID != 2 || v6.Flags != dispatch.FlagNoPing || v6.Priority != -1 || v6.Host != "2001:db8::1" ||
			v6.Transport != "tls" || v6.Attrs.Raw != "socket=udp:127.0.0.1:5060;my=x" {
			t.Errorf("row 40 = %+v", v6)
		}
		// Kamailio's order inside set 1: priority 5 first, then the later
		// row (id 30) before the earlier one (id 10).
		order := map[int][]string{
			1: {"sip:10.0.0.2", "sip:10.0.0.3:5060", "sip:10.0.0.1:5060"},
			2: {v6.URI},
		}
		sets := dispatch.BuildSets(dests)
		if len(sets) != 2 {
			t.Fatalf("%d sets, want 2", len(sets))
		}
		for _, s := range sets {
			if got := uris(s.Dests); !slices.Equal(got, order[s.ID]) {
				t.Errorf("set %d order %q, want %q", s.ID, got, order[s.ID])
			}
		}

		// The same table named with its schema (database on MySQL).
		cfg.TableName = map[string]string{"mysql": "test", "postgres": "public", "sqlite": "main"}[b.name] + "." + tbl
		again, err := LoadDB(context.Background(), &cfg, discardLog)
		if err != nil || !slices.Equal(uris(again), want) || again[0].Source != cfg.TableName+":10" {
			t.Errorf("schema.table: %q, %v", uris(again), err)
		}
	})
}

// TestDBOlderTableVersions loads the tables of Kamailio's older schema
// versions (1: no flags, 2: no priority, 3: no attrs) and a table with
// other column names.
func TestDBOlderTableVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		for _, tc := range []struct {
			name, cols, insert string
			cfg                func(*dispatch.Config)
			flags              dispatch.Flags
			prio               int
			attrs              string
		}{
			{name: "v1", cols: "setid INTEGER NOT NULL, destination VARCHAR(192) NOT NULL, description VARCHAR(64)",
				insert: "(1, 3, 'sip:10.1.0.1', 'v1')"},
			{name: "v2", cols: "setid INTEGER NOT NULL, destination VARCHAR(192) NOT NULL, flags INTEGER NOT NULL, description VARCHAR(64)",
				insert: "(1, 3, 'sip:10.1.0.1', 8, 'v2')", flags: 8},
			{name: "v3", cols: "setid INTEGER NOT NULL, destination VARCHAR(192) NOT NULL, flags INTEGER NOT NULL, priority INTEGER NOT NULL, description VARCHAR(64)",
				insert: "(1, 3, 'sip:10.1.0.1', 8, 7, 'v3')", flags: 8, prio: 7},
			{name: "renamed", cols: "grp INTEGER NOT NULL, gw VARCHAR(192) NOT NULL, st INTEGER NOT NULL, prio INTEGER NOT NULL, opts VARCHAR(128) NOT NULL",
				insert: "(1, 3, 'sip:10.1.0.1', 8, 7, 'duid=r')", flags: 8, prio: 7, attrs: "duid=r",
				cfg: func(c *dispatch.Config) {
					// Upper case: found case-insensitively, as the server reports them.
					c.SetIDCol, c.DestinationCol, c.FlagsCol, c.PriorityCol, c.AttrsCol = "GRP", "gw", "st", "prio", "opts"
				}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tbl := b.createTable(t, tc.cols)
				b.exec(t, "INSERT INTO %s VALUES %s", tbl, tc.insert)
				cfg := b.config(tbl)
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				dests, err := LoadDB(context.Background(), &cfg, discardLog)
				if err != nil {
					t.Fatal(err)
				}
				if len(dests) != 1 {
					t.Fatalf("%d destinations, want 1", len(dests))
				}
				d := dests[0]
				if d.SetID != 3 || d.URI != "sip:10.1.0.1" || d.Flags != tc.flags || d.Priority != tc.prio || d.Attrs.Raw != tc.attrs || d.Source != tbl+":1" {
					t.Errorf("got %+v", d)
				}
			})
		}
	})
}

func TestDBMissingColumnOrTable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		tbl := b.createTable(t, "setid INTEGER NOT NULL, uri VARCHAR(192) NOT NULL")
		cfg := b.config(tbl)
		_, err := LoadDB(context.Background(), &cfg, discardLog)
		if err == nil || !strings.Contains(err.Error(), `has no column "destination" (dispatcher.destination_col)`) {
			t.Errorf("missing destination column: %v", err)
		}
		cfg.TableName = tbl + "_gone"
		if _, err := LoadDB(context.Background(), &cfg, discardLog); err == nil || !strings.Contains(err.Error(), "table "+tbl+"_gone") {
			t.Errorf("missing table: %v", err)
		}
	})
}

func TestDBBadRows(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		// Nullable columns, so that NULLs can be tested.
		tbl := b.createTable(t, "setid INTEGER, destination VARCHAR(192), flags INTEGER, priority INTEGER, attrs VARCHAR(128)")
		b.exec(t, `INSERT INTO %s (id, setid, destination, flags, priority, attrs) VALUES
			(1, 1, 'sip:10.2.0.1', 0, 0, ''),
			(2, 1, 'tel:+4930123', 0, 0, ''),
			(3, 1, NULL, 0, 0, ''),
			(4, -1, 'sip:10.2.0.4', 0, 0, ''),
			(5, 1, 'sip:10.2.0.5', 0, 0, 'weight=abc'),
			(6, NULL, 'sip:10.2.0.6', 0, 0, ''),
			(7, 1, 'sip:10.2.0.7', -2, 0, ''),
			(8, 2, 'sip:10.2.0.8', NULL, NULL, NULL)`, tbl)
		cfg := b.config(tbl)
		dests, err := LoadDB(context.Background(), &cfg, discardLog)
		var le *dispatch.ListError
		if !errors.As(err, &le) {
			t.Fatalf("want a *dispatch.ListError, got %v", err)
		}
		var keys []string
		for _, l := range le.Lines {
			keys = append(keys, fmt.Sprintf("%s:%d", l.File, l.Line))
		}
		want := []string{tbl + ":2", tbl + ":3", tbl + ":4", tbl + ":5", tbl + ":6", tbl + ":7"}
		if !slices.Equal(keys, want) {
			t.Fatalf("bad rows %q, want %q\n%v", keys, want, err)
		}
		for _, frag := range []string{tbl + `:2: bad URI "tel:+4930123"`, tbl + ":3: destination is NULL",
			tbl + ":4: bad set id -1", tbl + ":6: set id is NULL", tbl + ":7: bad flags -2"} {
			if !strings.Contains(err.Error(), frag) {
				t.Errorf("error lacks %q:\n%v", frag, err)
			}
		}
		if got := uris(dests); !slices.Equal(got, []string{"sip:10.2.0.1", "sip:10.2.0.8"}) {
			t.Errorf("good rows %q", got)
		}
		if d := dests[1]; d.Flags != 0 || d.Priority != 0 || d.Attrs.Raw != "" {
			t.Errorf("NULL flags, priority, attrs: %+v", d)
		}

		// loadDests: ds_load_mode 1 refuses the table, 0 skips the bad rows.
		if _, err := Load(&cfg, discardLog); !errors.As(err, &le) || len(le.Lines) != 6 {
			t.Errorf("ds_load_mode 1: %v", err)
		}
		cfg.LoadMode = 0
		got, err := Load(&cfg, discardLog)
		if err != nil || !slices.Equal(uris(got), []string{"sip:10.2.0.1", "sip:10.2.0.8"}) {
			t.Errorf("ds_load_mode 0: %q, %v", uris(got), err)
		}
	})
}

// TestDBWithoutIDColumn names rows by position when the table (a view,
// say) has no id column.
func TestDBWithoutIDColumn(t *testing.T) {
	b := openBackend(t, "sqlite")
	b.exec(t, "CREATE TABLE gws (setid INTEGER, destination VARCHAR(192))")
	b.exec(t, "INSERT INTO gws VALUES (1, 'sip:10.3.0.1'), (1, 'tel:1')")
	cfg := b.config("gws")
	dests, err := LoadDB(context.Background(), &cfg, discardLog)
	if err == nil || !strings.HasPrefix(err.Error(), "gws:2: bad URI") {
		t.Errorf("err %v", err)
	}
	if len(dests) != 1 || dests[0].Source != "gws:1" {
		t.Errorf("dests %+v", dests)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// downURLs are db_urls of servers that are not there, with a password that
// must not appear in any message.
func downURLs(t *testing.T) map[string]string {
	port := closedPort(t)
	return map[string]string{
		"mysql":    fmt.Sprintf("mysql://root:%s@127.0.0.1:%d/test", testPassword, port),
		"postgres": fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/test?sslmode=disable", testPassword, port),
		"sqlite":   "sqlite://" + filepath.Join(t.TempDir(), "missing", "dispatcher.db"),
	}
}

func TestDBUnreachable(t *testing.T) {
	for name, url := range downURLs(t) {
		t.Run(name, func(t *testing.T) {
			cfg := dispatch.DefaultConfig()
			cfg.DBURL = url
			start := time.Now()
			dests, err := LoadDB(context.Background(), &cfg, discardLog)
			if err == nil || dests != nil {
				t.Fatalf("loaded %d destinations from a missing server", len(dests))
			}
			if time.Since(start) > dbTimeout+time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			msg := err.Error()
			if strings.Contains(msg, testPassword) {
				t.Errorf("password in %q", msg)
			}
			if name != "sqlite" && (!strings.Contains(msg, "xxxxx@127.0.0.1:") || !strings.Contains(msg, "refused")) {
				t.Errorf("error does not name the redacted URL and the cause: %q", msg)
			}
			if name == "sqlite" {
				if !strings.Contains(msg, "no such file") {
					t.Errorf("error %q", msg)
				}
				if _, err := os.Stat(filepath.Dir(strings.TrimPrefix(url, "sqlite://"))); !os.IsNotExist(err) {
					t.Errorf("the load created something: %v", err)
				}
			}
		})
	}
}

// TestDBSilentServer: a server that accepts the connection and never
// answers must not hold a load beyond its deadline.
func TestDBSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, url := range []string{
		fmt.Sprintf("mysql://root@127.0.0.1:%d/test", port),
		fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?sslmode=disable", port),
	} {
		cfg := dispatch.DefaultConfig()
		cfg.DBURL = url
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, err := LoadDB(ctx, &cfg, discardLog)
		cancel()
		if err == nil {
			t.Errorf("%s: loaded from a silent server", url)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s: returned after %v, deadline was 300ms", url, el)
		}
	}
}

// TestDBReload runs the sources of serve over each database: a reload after
// an UPDATE and an INSERT changes the running sets and keeps runtime state;
// a bad row or a dead server keeps the running sets as they were.
func TestDBReload(t *testing.T) {
	down := downURLs(t)
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		ctx := context.Background()
		tbl := b.createTable(t, v4Columns)
		b.exec(t, `INSERT INTO %s (id, setid, destination, flags, priority, attrs) VALUES
			(1, 1, 'sip:10.4.0.1:5060', 0, 0, 'duid=a'),
			(2, 1, 'sip:10.4.0.2:5060', 0, 0, 'duid=b')`, tbl)
		cfg := b.config(tbl)
		if err := errors.Join(append(Validate(&cfg), cfg.Validate())...); err != nil {
			t.Fatal(err)
		}
		src, reg := loadWithRegistry(t, &cfg)

		// Runtime state that a reload must carry over.
		op, err := dispatch.ParseMarkState("i")
		if err != nil {
			t.Fatal(err)
		}
		op.Direct = true
		if err := reg.Mark(ctx, 1, "sip:10.4.0.1:5060", op); err != nil {
			t.Fatal(err)
		}

		b.exec(t, "UPDATE %s SET priority = 10 WHERE id = 2", tbl)
		b.exec(t, "INSERT INTO %s (id, setid, destination, flags, priority, attrs) VALUES (3, 2, 'sip:10.4.0.3:5060', 0, 0, '')", tbl)
		if err := src.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := reg.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[int][]string{}
		for _, s := range st {
			for _, d := range s.Dests {
				got[s.ID] = append(got[s.ID], fmt.Sprintf("%s p%d %s", d.URI, d.Priority, d.State.Flags.Letters()))
			}
		}
		want := map[int][]string{
			1: {"sip:10.4.0.2:5060 p10 AX", "sip:10.4.0.1:5060 p0 IX"},
			2: {"sip:10.4.0.3:5060 p0 AX"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("after reload %v, want %v", got, want)
		}

		// A bad row fails the reload, named table:id; nothing changes.
		b.exec(t, "INSERT INTO %s (id, setid, destination) VALUES (4, 1, 'sip:10.4.0.4:0')", tbl)
		b.exec(t, "DELETE FROM %s WHERE id = 3", tbl)
		err = src.Reload(ctx)
		if err == nil || !strings.Contains(err.Error(), tbl+":4: ") {
			t.Fatalf("reload with a bad row: %v", err)
		}
		assertStatus(t, reg, st)

		// The server gone: the reload fails without the password; nothing changes.
		cfg.DBURL = down[b.name]
		err = src.Reload(ctx)
		if err == nil || strings.Contains(err.Error(), testPassword) {
			t.Fatalf("reload from a dead server: %v", err)
		}
		assertStatus(t, reg, st)
		if len(src.dests) != 3 {
			t.Errorf("sources hold %d destinations, want the 3 running", len(src.dests))
		}
	})
}

// assertStatus fails unless the registry still reports want.
func assertStatus(t *testing.T, reg *actors.Registry, want []actors.SetStatus) {
	t.Helper()
	got, err := reg.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("running sets changed:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseDBURL(t *testing.T) {
	const pw = "topSecret77"
	for _, tc := range []struct {
		url, redacted, err string
	}{
		{url: "mysql://root:" + pw + "@db.example:3307/kamailio", redacted: "mysql://root:xxxxx@db.example:3307/kamailio"},
		{url: "mysql://kamailio@10.0.0.1/kamailio", redacted: "mysql://kamailio@10.0.0.1/kamailio"},
		{url: "postgres://u:" + pw + "@h/db?password=" + pw + "x", redacted: "postgres://u:xxxxx@h/db?password=xxxxx"},
		{url: "postgresql://u@h:5433/db", redacted: "postgresql://u@h:5433/db"},
		{url: "sqlite:///var/lib/kamailio/db.sqlite", redacted: "sqlite:///var/lib/kamailio/db.sqlite"},
		{url: "mysql://root:" + pw + "@/kamailio", err: "missing host"},
		{url: "mysql://root:" + pw + "@h", err: "mysql://root:xxxxx@h: missing database name"},
		{url: "mysql://root:" + pw + "@h:99999/db", err: `bad port "99999"`},
		{url: "mysql://root:" + pw + "@h:x/db", err: `invalid port ":x"`},
		{url: "mysql://root:" + pw + "@h/db?tls=true", err: "query parameters are not supported"},
		{url: "postgres://u:" + pw + "@h/db?sslmode=bogus", err: "postgres://u:xxxxx@h/db?sslmode=bogus: "},
		{url: "oracle://u:" + pw + "@h/db", err: `unknown database "oracle"`},
		{url: "dispatcher.db", err: "want mysql://"},
		{url: "sqlite://", err: "missing file path"},
	} {
		s, err := parseDBURL(tc.url)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case tc.err == "" && s.redacted != tc.redacted:
			t.Errorf("%s: redacted %q, want %q", tc.url, s.redacted, tc.redacted)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.url, err, tc.err)
		case err != nil && strings.Contains(err.Error(), pw):
			t.Errorf("%s: password in %q", tc.url, err)
		}
	}
}

// TestDBExtraAttrs loads ds_db_extra_attrs columns, a text and an integer
// one, into attrs as Kamailio does: appended as name=value after a ';',
// NULL and empty values left out; a missing column fails the load.
func TestDBExtraAttrs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *dbBackend) {
		tbl := b.createTable(t, v4Columns+`, prefix VARCHAR(32), gwid INTEGER`)
		b.exec(t, `INSERT INTO %s (id, setid, destination, attrs, prefix, gwid) VALUES
			(1, 1, 'sip:10.0.0.1', 'duid=a', '+49', 7),
			(2, 1, 'sip:10.0.0.2', 'duid=b;', NULL, 8),
			(3, 1, 'sip:10.0.0.3', '', '', NULL)`, tbl)
		cfg := b.config(tbl)
		cfg.DBExtraAttrs = "pref=prefix;id=gwid;"
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		dests, err := LoadDB(context.Background(), &cfg, discardLog)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"duid=a;pref=+49;id=7", "duid=b;id=8", ""}
		for i, d := range dests {
			if d.Attrs.Raw != want[i] {
				t.Errorf("row %d attrs %q, want %q", i+1, d.Attrs.Raw, want[i])
			}
		}
		if v, _ := dests[0].Attrs.Get("pref"); v != "+49" {
			t.Errorf("pref = %q", v)
		}
		cfg.DBExtraAttrs = "x=nosuchcol"
		if _, err := LoadDB(context.Background(), &cfg, discardLog); err == nil || !strings.Contains(err.Error(), `no column "nosuchcol" (dispatcher.ds_db_extra_attrs)`) {
			t.Errorf("missing column: %v", err)
		}
	})
}
