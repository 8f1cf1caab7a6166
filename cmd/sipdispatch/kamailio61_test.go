package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestKamailio61Fixtures checks Kamailio 6.1's own dispatcher samples
// (testdata/kamailio61, sources in each file's comment): the dispatcher
// section of the module's sample config and every documented modparam load,
// with the module's sample list unchanged, and check passes with one warning
// per key that has no effect here, naming the key and its line.
func TestKamailio61Fixtures(t *testing.T) {
	for _, tc := range []struct {
		file    string
		args    []string
		ignored []string // keys warned about, in file order
		mapped  string   // the start of check's list of mapped keys
	}{
		{"sample.yaml", nil, []string{"xavp_dst", "xavp_ctx", "ds_timer_mode"},
			"dispatcher keys mapped: list_file table_name flags ds_ping_from ds_ping_interval ds_probing_mode\n"},
		{"allparams.yaml", []string{"-list", "testdata/kamailio61/dispatcher.list"},
			// force_dst's notice comes after the per-key ones.
			[]string{"xavp_dst", "xavp_dst_mode", "xavp_ctx", "xavp_ctx_mode", "setid_pvname", "attrs_pvname",
				"ds_timer_mode", "event_callback", "event_callback_mode", "ds_attrs_none", "force_dst"},
			// list_file is replaced by -list.
			"dispatcher keys mapped: db_url table_name setid_col destination_col flags_col priority_col attrs_col flags use_default hash_pvar " +
				"ds_ping_method ds_ping_from ds_ping_interval ds_ping_fr_timer ds_ping_latency_stats ds_retain_latency_stats ds_latency_estimator_alpha " +
				"ds_ping_reply_codes ds_probing_threshold ds_inactive_threshold ds_probing_mode ds_hash_size ds_hash_expire ds_hash_initexpire " +
				"ds_hash_check_interval outbound_proxy ds_default_socket ds_default_sockname ds_ping_socket ds_db_extra_attrs ds_load_mode reload_delta ds_dns_mode ds_dns_interval ds_dns_ttl ds_dns_match_all\n" +
				"dispatcher keys ignored (see the warnings): force_dst xavp_dst"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"-config", "testdata/kamailio61/" + tc.file}, tc.args...)
			if err := runCheck(args, &out, &errb); err != nil {
				t.Fatalf("check: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
			}
			var keys []string
			re := regexp.MustCompile(`^warning: testdata/kamailio61/` + regexp.QuoteMeta(tc.file) + `:\d+: dispatcher\.([a-z_]+): `)
			for _, l := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
				m := re.FindStringSubmatch(l)
				if m == nil {
					t.Errorf("unexpected stderr line %q", l)
					continue
				}
				keys = append(keys, m[1])
			}
			if !slices.Equal(keys, tc.ignored) {
				t.Errorf("warnings for %q, want %q\n%s", keys, tc.ignored, errb.String())
			}
			if !strings.Contains(out.String(), tc.mapped) {
				t.Errorf("stdout lacks %q:\n%s", tc.mapped, out.String())
			}
			// The sample list, unchanged: both sets, the socket attribute
			// accepted because udp:192.168.0.125:5060 is a listener.
			for _, want := range []string{"set 1 (3 destinations)", "set 2 (2 destinations)", "socket=udp:192.168.0.125:5060"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestSocketsMustBeListeners: ds_default_socket, ds_ping_socket,
// ds_default_sockname and a destination's socket, sockname or ping_socket
// that name no listener (or one of another transport) are errors at their
// file:line, as Kamailio refuses to start or to load such a destination.
func TestSocketsMustBeListeners(t *testing.T) {
	dir := t.TempDir()
	list := writeFile(t, dir, "d.list", "1 sip:127.0.0.1:7070 0 0 socket=udp:127.0.0.9:5060\n"+
		"1 sip:127.0.0.1:7072 0 0 sockname=nope\n"+
		"1 sip:127.0.0.1:7074;transport=tcp 0 0 socket=udp:127.0.0.1:5060\n"+
		"1 sip:127.0.0.1:7076 0 0 ping_socket=udp:127.0.0.1:5060;sockname=s1\n")
	cfg := writeFile(t, dir, "c.yaml", "listen: ['udp:127.0.0.1:5060 name s1', tcp:127.0.0.1:5060]\n"+
		"dispatcher:\n  list_file: "+list+"\n  ds_default_socket: udp:127.0.0.1:5099\n  ds_ping_socket: tls:127.0.0.1:5061\n"+
		"  ds_default_sockname: s2\n  ds_ping_fr_timeout: 250\n")
	var out, errb bytes.Buffer
	err := runCheck([]string{"-config", cfg}, &out, &errb)
	if err == nil {
		t.Fatalf("check passed:\n%s", out.String())
	}
	for _, want := range []string{
		cfg + `:4: dispatcher.ds_default_socket: "udp:127.0.0.1:5099": not one of the listen sockets`,
		cfg + `:5: dispatcher.ds_ping_socket: "tls:127.0.0.1:5061": not one of the listen sockets`,
		cfg + `:6: dispatcher.ds_default_sockname: "s2": no listen socket has this name`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// With the defaults fixed, the list's bad lines are reported.
	writeFile(t, dir, "c.yaml", "listen: ['udp:127.0.0.1:5060 name s1', tcp:127.0.0.1:5060]\n"+
		"dispatcher:\n  list_file: "+list+"\n  ds_ping_fr_timeout: 250\n")
	c, lerr := loadConfig(cfg)
	if lerr != nil || c.Dispatcher.PingFRTimer != 250 || c.sipConfig().PingTimeout != 250*time.Millisecond {
		t.Fatalf("ds_ping_fr_timeout alias: %v, %d", lerr, c.Dispatcher.PingFRTimer)
	}
	err = runCheck([]string{"-config", cfg}, &out, &errb)
	if err == nil {
		t.Fatal("check passed with bad socket attributes")
	}
	for _, want := range []string{
		list + `:1: socket "udp:127.0.0.9:5060": not one of the listen sockets`,
		list + `:2: sockname "nope": no listen socket has this name`,
		list + `:3: socket "udp:127.0.0.1:5060": a udp listener cannot send to this tcp destination`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":4:") {
		t.Errorf("line 4 is valid: %v", err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
