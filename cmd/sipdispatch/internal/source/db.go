package source

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// dbTimeout bounds one load, connecting and querying together: a reload from
// the API or SIGHUP must come back with an answer, not hang on a dead server.
const dbTimeout = 5 * time.Second

// dbIDCol is the row key. Kamailio has no parameter for it; every version of
// its dispatcher table has an `id` column.
const dbIDCol = "id"

// redactedPassword replaces a password in messages, as url.URL.Redacted does.
const redactedPassword = "xxxxx"

// dbSource is a parsed dispatcher.db_url.
type dbSource struct {
	// redacted is the URL with any password masked: the only form of it
	// that goes into errors and logs.
	redacted string
	// secrets are the password(s) in the URL, scrubbed from driver errors.
	secrets []string
	// backtick: MySQL quotes identifiers with `; PostgreSQL and SQLite with ".
	backtick bool
	// open returns a handle; it does not connect yet.
	open func(log *slog.Logger) (*sql.DB, error)
}

// parseDBURL reads mysql://user:pass@host[:port]/db, postgres://... (any URL
// pgx accepts, postgresql:// too) or sqlite:///path.db. Its errors never
// contain the password.
func parseDBURL(raw string) (*dbSource, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("want mysql://user:pass@host:port/db, postgres://user:pass@host:port/db or sqlite:///path.db")
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		return parseSQLiteURL(raw, rest)
	case "mysql", "postgres", "postgresql":
	default:
		return nil, fmt.Errorf("unknown database %q: want mysql, postgres or sqlite", scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s://...: %v", scheme, err)
	}
	s := &dbSource{}
	s.redacted, s.secrets = redactURL(u)
	if strings.ToLower(scheme) == "mysql" {
		err = s.mysql(u)
	} else {
		err = s.postgres(raw)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// redactURL masks the password of u, in its user part or (PostgreSQL) in a
// password= query parameter, and returns the masked URL and the passwords.
func redactURL(u *url.URL) (string, []string) {
	c := *u
	var secrets []string
	if p, ok := u.User.Password(); ok && p != "" {
		secrets = append(secrets, p)
		c.User = url.UserPassword(u.User.Username(), redactedPassword)
	}
	q := u.Query()
	if p := q.Get("password"); p != "" {
		secrets = append(secrets, p)
		q.Set("password", redactedPassword)
		c.RawQuery = q.Encode()
	}
	return c.String(), secrets
}

func (s *dbSource) mysql(u *url.URL) error {
	switch {
	case u.Hostname() == "":
		return fmt.Errorf("%s: missing host", s.redacted)
	case strings.Trim(u.Path, "/") == "":
		return fmt.Errorf("%s: missing database name after the host", s.redacted)
	case u.RawQuery != "":
		return fmt.Errorf("%s: query parameters are not supported for mysql", s.redacted)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net = "tcp"
	port := u.Port()
	if port == "" {
		port = "3306"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s: bad port %q", s.redacted, port)
	}
	cfg.Addr = net.JoinHostPort(u.Hostname(), port)
	cfg.DBName = strings.Trim(u.Path, "/")
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = dbTimeout, dbTimeout, dbTimeout
	s.backtick = true
	s.open = func(log *slog.Logger) (*sql.DB, error) {
		c := cfg.Clone()
		c.Logger = mysqlLogger{log}
		conn, err := mysql.NewConnector(c)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	}
	return nil
}

func (s *dbSource) postgres(raw string) error {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("%s: %s", s.redacted, s.scrub(err.Error()))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = dbTimeout
	}
	s.open = func(*slog.Logger) (*sql.DB, error) { return stdlib.OpenDB(*cfg), nil }
	return nil
}

// parseSQLiteURL takes sqlite:///abs/path.db or sqlite://rel/path.db. The
// file is opened read-only and must exist: a typo must not create an empty
// table-less database.
func parseSQLiteURL(raw, path string) (*dbSource, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: missing file path (sqlite:///path.db)", raw)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_pragma=busy_timeout(" +
		strconv.FormatInt(dbTimeout.Milliseconds(), 10) + ")"
	return &dbSource{
		redacted: raw,
		open: func(*slog.Logger) (*sql.DB, error) {
			if _, err := os.Stat(path); err != nil {
				return nil, err
			}
			return sql.Open("sqlite", dsn)
		},
	}, nil
}

// mysqlLogger sends the MySQL driver's own messages to slog.
type mysqlLogger struct{ log *slog.Logger }

// Print implements mysql.Logger.
func (l mysqlLogger) Print(v ...any) { l.log.Warn("mysql driver", "msg", fmt.Sprint(v...)) }

// scrub masks the URL's passwords in a driver's message.
func (s *dbSource) scrub(msg string) string {
	for _, p := range s.secrets {
		msg = strings.ReplaceAll(msg, p, redactedPassword)
	}
	return msg
}

// fail wraps a driver error with the redacted URL, keeping the error chain
// unless the message had to be scrubbed of a password.
func (s *dbSource) fail(err error) error {
	if msg := s.scrub(err.Error()); msg != err.Error() {
		return fmt.Errorf("database %s: %s", s.redacted, msg)
	}
	return fmt.Errorf("database %s: %w", s.redacted, err)
}

// quote quotes an identifier; a dotted name is schema.table.
func (s *dbSource) quote(name string) string {
	q := `"`
	if s.backtick {
		q = "`"
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = q + strings.ReplaceAll(p, q, q+q) + q
	}
	return strings.Join(parts, ".")
}

// LoadDB reads the destinations of Kamailio's dispatcher table in id order,
// the database's counterpart of a list file's line order. Columns are found
// by name (the configured ones, case-insensitive): a table of an older
// Kamailio version without flags, priority or attrs loads with 0, 0 and "".
// Bad rows come back as a *dispatch.ListError naming each as table:id, with
// the good rows, as ReadList does for lines; any other failure returns no
// destinations and names the URL without its password.
func LoadDB(ctx context.Context, cfg *dispatch.Config, log *slog.Logger) ([]dispatch.Destination, error) {
	s, err := parseDBURL(cfg.DBURL)
	if err != nil {
		return nil, fmt.Errorf("dispatcher.db_url: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	db, err := s.open(log)
	if err != nil {
		return nil, s.fail(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		return nil, s.fail(err)
	}
	q, cols, err := s.selectRows(ctx, db, cfg, log)
	if err != nil {
		return nil, s.fail(err)
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, s.fail(fmt.Errorf("table %s: %w", cfg.TableName, err))
	}
	defer rows.Close()
	var (
		dests []dispatch.Destination
		bad   []dispatch.LineError
		vals  = make([]any, cols.n)
		ptrs  = make([]any, cols.n)
	)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for n := 1; rows.Next(); n++ {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, s.fail(fmt.Errorf("table %s: row %d: %w", cfg.TableName, n, err))
		}
		key, d, err := cols.destination(vals, n)
		if err != nil {
			bad = append(bad, dispatch.LineError{File: cfg.TableName, Line: key, Reason: err.Error()})
			continue
		}
		d.Source = cfg.TableName + ":" + strconv.Itoa(key)
		dests = append(dests, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(fmt.Errorf("table %s: %w", cfg.TableName, err))
	}
	if len(dests) == 0 && len(bad) == 0 {
		log.Warn("dispatcher table is empty: no destination sets", "table", cfg.TableName)
	}
	if len(bad) > 0 {
		return dests, &dispatch.ListError{Lines: bad}
	}
	return dests, nil
}

// rowColumns says where each field is in a selected row; -1 = not in the table.
type rowColumns struct {
	n                                    int
	id, set, dst, flags, priority, attrs int
	extra                                []extraCol // ds_db_extra_attrs
}

// extraCol is one ds_db_extra_attrs column: its value joins attrs as name=value.
type extraCol struct {
	name string
	col  int
}

// selectRows finds the table's columns and builds the query for them.
func (s *dbSource) selectRows(ctx context.Context, db *sql.DB, cfg *dispatch.Config, log *slog.Logger) (string, rowColumns, error) {
	table := s.quote(cfg.TableName)
	probe, err := db.QueryContext(ctx, "SELECT * FROM "+table+" WHERE 1=0")
	if err != nil {
		return "", rowColumns{}, fmt.Errorf("table %s: %w", cfg.TableName, err)
	}
	names, err := probe.Columns()
	probe.Close()
	if err != nil {
		return "", rowColumns{}, fmt.Errorf("table %s: %w", cfg.TableName, err)
	}
	have := make(map[string]string, len(names))
	for _, n := range names {
		have[strings.ToLower(n)] = n
	}
	var (
		sel []string
		c   = rowColumns{id: -1, flags: -1, priority: -1, attrs: -1}
	)
	pick := func(key, name string, required bool) (int, error) {
		actual, ok := have[strings.ToLower(name)]
		switch {
		case ok:
			sel = append(sel, s.quote(actual))
			return len(sel) - 1, nil
		case required:
			return -1, fmt.Errorf("table %s has no column %q (dispatcher.%s)", cfg.TableName, name, key)
		}
		log.Info("dispatcher table has no such column, as in older Kamailio versions; using the default",
			"table", cfg.TableName, "column", name, "key", "dispatcher."+key)
		return -1, nil
	}
	if c.set, err = pick("setid_col", cfg.SetIDCol, true); err != nil {
		return "", c, err
	}
	if c.dst, err = pick("destination_col", cfg.DestinationCol, true); err != nil {
		return "", c, err
	}
	c.flags, _ = pick("flags_col", cfg.FlagsCol, false)
	c.priority, _ = pick("priority_col", cfg.PriorityCol, false)
	c.attrs, _ = pick("attrs_col", cfg.AttrsCol, false)
	if cfg.DBExtraAttrs != "" {
		// Validate parsed it; Kamailio's query fails on a missing column too.
		extra, _ := dispatch.ParseExtraAttrs(cfg.DBExtraAttrs)
		for _, e := range extra {
			i, err := pick("ds_db_extra_attrs", e.Value, true)
			if err != nil {
				return "", c, err
			}
			c.extra = append(c.extra, extraCol{name: e.Name, col: i})
		}
	}
	q := "SELECT " + strings.Join(sel, ", ")
	if actual, ok := have[dbIDCol]; ok {
		q += ", " + s.quote(actual) + " FROM " + table + " ORDER BY " + s.quote(actual)
		c.id = len(sel)
		sel = append(sel, actual)
	} else {
		// A view without id: the database's own order, rows named by position.
		q += " FROM " + table
	}
	c.n = len(sel)
	return q, c, nil
}

// destination validates one row. key is the row's id, or its position n
// when the table has no id column.
func (c rowColumns) destination(vals []any, n int) (int, dispatch.Destination, error) {
	key := n
	if c.id >= 0 {
		id, ok, err := intValue(vals[c.id])
		if err != nil || !ok || id < 0 || id > math.MaxInt32 {
			return n, dispatch.Destination{}, fmt.Errorf("bad id %v (row %d)", vals[c.id], n)
		}
		key = int(id)
	}
	fail := func(format string, a ...any) (int, dispatch.Destination, error) {
		return key, dispatch.Destination{}, fmt.Errorf(format, a...)
	}
	set, ok, err := intValue(vals[c.set])
	switch {
	case err != nil:
		return fail("bad set id: %v", err)
	case !ok:
		return fail("set id is NULL")
	case set < 0 || set > math.MaxInt32:
		return fail("bad set id %d: want 0..%d", set, math.MaxInt32)
	}
	uri, ok, err := textValue(vals[c.dst])
	switch {
	case err != nil:
		return fail("bad destination: %v", err)
	case !ok:
		return fail("destination is NULL")
	}
	var flags, prio int64
	if c.flags >= 0 {
		if flags, _, err = intValue(vals[c.flags]); err != nil {
			return fail("bad flags: %v", err)
		}
		if flags < 0 || flags > math.MaxUint32 {
			return fail("bad flags %d: want 0..%d", flags, uint32(math.MaxUint32))
		}
	}
	if c.priority >= 0 {
		// Kamailio's column is a signed INT: a negative priority sorts last.
		if prio, _, err = intValue(vals[c.priority]); err != nil {
			return fail("bad priority: %v", err)
		}
		if prio < math.MinInt32 || prio > math.MaxInt32 {
			return fail("bad priority %d: out of the INT range", prio)
		}
	}
	attrs := ""
	if c.attrs >= 0 {
		if attrs, _, err = textValue(vals[c.attrs]); err != nil {
			return fail("bad attrs: %v", err)
		}
	}
	// ds_db_extra_attrs: each non-NULL, non-empty value is appended as
	// name=value, after a ';' when attrs has none at its end, as Kamailio.
	for _, e := range c.extra {
		v, ok, err := textValue(vals[e.col])
		if n, isInt := vals[e.col].(int64); isInt {
			v, ok, err = strconv.FormatInt(n, 10), true, nil
		}
		if err != nil {
			return fail("bad %s: %v", e.name, err)
		}
		if !ok || v == "" {
			continue
		}
		if attrs != "" && !strings.HasSuffix(attrs, ";") {
			attrs += ";"
		}
		attrs += e.name + "=" + v + ";"
	}
	d, err := dispatch.NewDestination(int(set), uri, dispatch.Flags(flags), int(prio), attrs)
	if err != nil {
		return fail("%v", err)
	}
	return key, d, nil
}

// intValue reads an integer column in the forms the drivers hand it over:
// int64 from pgx and SQLite, decimal text from MySQL's text protocol. ok is
// false for NULL.
func intValue(v any) (n int64, ok bool, err error) {
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case int64:
		return x, true, nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, false, fmt.Errorf("%d is out of range", x)
		}
		return int64(x), true, nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, false, fmt.Errorf("%v is not an integer", x)
		}
		return int64(x), true, nil
	case []byte:
		return parseIntText(string(x))
	case string:
		return parseIntText(x)
	}
	return 0, false, fmt.Errorf("%T is not an integer", v)
}

func parseIntText(s string) (int64, bool, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%q is not an integer", s)
	}
	return n, true, nil
}

// textValue reads a text column; ok is false for NULL.
func textValue(v any) (s string, ok bool, err error) {
	switch x := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return x, true, nil
	case []byte:
		return string(x), true, nil
	}
	return "", false, fmt.Errorf("%T is not text", v)
}

// Validate checks the database keys when db_url is set; errors name the
// key and never the password.
func Validate(c *dispatch.Config) []error {
	if c.DBURL == "" {
		return nil
	}
	var errs []error
	if _, err := parseDBURL(c.DBURL); err != nil {
		errs = append(errs, fmt.Errorf("dispatcher.db_url: %w", err))
	}
	for _, f := range []struct{ key, v string }{
		{"table_name", c.TableName}, {"setid_col", c.SetIDCol}, {"destination_col", c.DestinationCol},
		{"flags_col", c.FlagsCol}, {"priority_col", c.PriorityCol}, {"attrs_col", c.AttrsCol},
	} {
		if strings.TrimSpace(f.v) == "" || strings.ContainsRune(f.v, 0) {
			errs = append(errs, fmt.Errorf("dispatcher.%s: %q: must name a table or column", f.key, f.v))
		}
	}
	return errs
}

// dbSourceName names a database source in messages: table and redacted URL.
func dbSourceName(c *dispatch.Config) string {
	s, err := parseDBURL(c.DBURL)
	if err != nil {
		return "table " + c.TableName
	}
	return fmt.Sprintf("table %s at %s", c.TableName, s.redacted)
}
