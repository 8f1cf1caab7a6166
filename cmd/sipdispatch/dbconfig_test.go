package main

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The db_url keys as the config file and the commands see them; the
// database source itself is tested in internal/source.

const testPassword = "s3cret-Pw9"

// v4Columns are the columns of Kamailio's version-4 table after id.
const v4Columns = `setid INTEGER DEFAULT 0 NOT NULL,
	destination VARCHAR(192) DEFAULT '' NOT NULL,
	flags INTEGER DEFAULT 0 NOT NULL,
	priority INTEGER DEFAULT 0 NOT NULL,
	attrs VARCHAR(128) DEFAULT '' NOT NULL,
	description VARCHAR(64) DEFAULT '' NOT NULL`

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

func TestConfigDBKeys(t *testing.T) {
	p := writeConfig(t, "dispatcher:\n  db_url: mysql://root:topSecret77@h:x/db\n  table_name: \"\"\n")
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("bad db_url and empty table_name validated")
	}
	msg := err.Error()
	for _, want := range []string{p + `:2: dispatcher.db_url: mysql://...: invalid port ":x"`, p + `:3: dispatcher.table_name: ""`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "topSecret77") {
		t.Errorf("password in %q", msg)
	}

	// A relative SQLite path is relative to the config file, like list_file.
	p = writeConfig(t, "dispatcher: {db_url: \"sqlite://data/ds.db\"}\n")
	if c, err = loadConfig(p); err != nil {
		t.Fatal(err)
	}
	if want := "sqlite://" + filepath.Join(filepath.Dir(p), "data", "ds.db"); c.Dispatcher.DBURL != want {
		t.Errorf("db_url %q, want %q", c.Dispatcher.DBURL, want)
	}
}

// TestCheckConfigDatabase: check -config reads the table and prints the
// sets; a bad row fails it, named table:id.
func TestCheckConfigDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, "ds.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE TABLE dispatcher (id INTEGER PRIMARY KEY NOT NULL, " + v4Columns + ")",
		"INSERT INTO dispatcher (id, setid, destination, priority) VALUES (1, 1, 'sip:10.5.0.1', 0), (2, 1, 'sip:10.5.0.2', 0)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "sipdispatch.yaml")
	if err := os.WriteFile(cfg, []byte("dispatcher: {db_url: \"sqlite://ds.db\"}\nroutes:\n  - {name: all, dispatch: {set: 1, alg: 4}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI("check", "-config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"set 1 (2 destinations)", "sip:10.5.0.2", "(dispatcher:2)", "route 0 all: all dispatch set 1 alg 4 (round-robin) mode dst"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Index(stdout, "sip:10.5.0.2") > strings.Index(stdout, "sip:10.5.0.1") {
		t.Errorf("the later row must come first:\n%s", stdout)
	}

	if _, err := db.Exec("INSERT INTO dispatcher (id, setid, destination) VALUES (3, 1, 'sip:10.5.0.3:0')"); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI("check", "-config", cfg)
	if code != exitError || !strings.Contains(stderr, "dispatcher:3: ") {
		t.Errorf("bad row: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestServeRefusesUnreachableDB: serve stops before listening when the
// database cannot be reached, naming the URL without its password.
func TestServeRefusesUnreachableDB(t *testing.T) {
	for name, url := range downURLs(t) {
		t.Run(name, func(t *testing.T) {
			p := writeConfig(t, fmt.Sprintf("listen: [udp:127.0.0.1:%d]\napi: {listen: \"127.0.0.1:%d\"}\ndispatcher: {db_url: %q}\n",
				closedPort(t), closedPort(t), url))
			code, _, stderr := runCLI("serve", "-config", p)
			if code != exitError || !strings.Contains(stderr, "failed to load destinations: database ") {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			if strings.Contains(stderr, testPassword) {
				t.Errorf("password in:\n%s", stderr)
			}
		})
	}
}
