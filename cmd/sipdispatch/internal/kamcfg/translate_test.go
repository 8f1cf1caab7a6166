package kamcfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keys stands in for the configuration loader's list of dispatcher keys.
func keys(name string, _ any) KeyKind {
	switch name {
	case "list_file", "flags", "hash_pvar", "ds_ping_interval", "db_url", "use_default":
		return KeyMapped
	case "xavp_dst":
		return KeyNoop
	}
	return KeyUnknown
}

func translate(t *testing.T, cfg string, files ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i+1 < len(files); i += 2 {
		if err := os.WriteFile(filepath.Join(dir, files[i]), []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Translate(path, Options{DispatcherKey: keys})
	if err != nil {
		t.Fatal(err)
	}
	var rep strings.Builder
	res.Report.WriteTo(&rep)
	return strings.ReplaceAll(string(res.YAML), dir+"/", ""), strings.ReplaceAll(rep.String(), dir+"/", "")
}

func TestTranslate(t *testing.T) {
	tests := []struct {
		name     string
		cfg      string
		files    []string
		yaml     []string // each must appear in the YAML
		report   []string // each must appear in the report
		notYAML  []string
		noReport []string
	}{
		{
			name: "modparams, tm timers, listen, advertise",
			cfg: `#!KAMAILIO
#!define LIST "/etc/kamailio/dispatcher.list"
listen=udp:192.0.2.1:5060 advertise 203.0.113.1:5060
listen=tcp:eth0:5060
listen=tls:192.0.2.1:5061
listen=10.0.0.1
modparam("tm", "fr_timer", 3000)
modparam("tm", "fr_inv_timer", 60000) # comment
modparam("dispatcher", "list_file", LIST)
modparam("dispatcher", "flags", 2)
/* modparam("dispatcher", "flags", 3) */
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "ds_ping_fr_timer", 1000)
request_route { ds_select_dst("1", "4"); t_relay(); }
`,
			yaml: []string{"- udp:192.0.2.1:5060 # from kamailio.cfg:3", "advertise: 203.0.113.1:5060", "- udp:10.0.0.1", "- tcp:10.0.0.1",
				"fr_timer: 3000ms # from kamailio.cfg:7", "fr_inv_timer: 60000ms", "list_file: /etc/kamailio/dispatcher.list", "flags: 2 # from kamailio.cfg:10",
				"xavp_dst: _dsdst_", "mode: stateful"},
			notYAML: []string{"flags: 3", "ds_ping_fr_timer", "eth0", "tls:"},
			report: []string{
				`kamailio.cfg:4: not translated: listen=tcp:eth0:5060: sipdispatch listens on IP addresses only`,
				`kamailio.cfg:5: not translated: listen=tls:192.0.2.1:5061: tls listeners are not translated`,
				`kamailio.cfg:12: translated: modparam("dispatcher", "xavp_dst"): dispatcher.xavp_dst (accepted; it has no effect in sipdispatch)`,
				`kamailio.cfg:13: not translated: modparam("dispatcher", "ds_ping_fr_timer"): not supported yet`,
				`kamailio.cfg:14: translated: no t_on_failure: routes "request": failover.on: []`,
			},
		},
		{
			name: "ifdef, conditions, failure_route with ds_next_dst and ds_mark_dst",
			cfg: `#!define WITH_LB
#!ifdef WITH_LB
modparam("dispatcher", "flags", 2)
#!else
modparam("dispatcher", "flags", 0)
#!endif
#!ifndef WITH_LB
modparam("dispatcher", "use_default", 1)
#!endif
request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (has_totag()) { if (loose_route()) { t_relay(); } exit; }
	if (is_method("CANCEL")) { t_relay(); exit; }
	if (ds_is_from_list("2")) {
		ds_select_dst("3", "0");
		t_relay();
		exit;
	}
	if (is_method("INVITE|MESSAGE") && $rU =~ "^\+49") {
		route(PSTN);
	}
	if ($hdr(X-Tenant) == "acme") {
		if (!ds_select_domain("4", "9", "2")) { sl_send_reply("503", "Busy"); exit; }
		t_on_failure("MARK");
		t_relay();
		exit;
	}
	if (uri == myself) { ds_select_dst("5", "4"); t_relay(); exit; }
}
route[PSTN] {
	t_on_failure("RETRY");
	if (!ds_select_dst("1", "10")) { send_reply("404", "No destination"); exit; }
	route(RELAY);
}
route[RELAY] { if (!t_relay()) { sl_reply_error(); } exit; }
failure_route[RETRY] {
	if (t_is_canceled()) { exit; }
	if (t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) {
		ds_mark_dst("ip");
		if (ds_next_dst()) { t_on_failure("RETRY"); route(RELAY); exit; }
	}
}
failure_route[MARK] {
	ds_mark_dst();
	if (t_check_status("486")) { exit; }
	ds_next_domain();
	t_relay();
}
`,
			yaml: []string{
				"- name: request\n    match:\n      from_set: 2\n    dispatch:\n      set: 3\n      failover:\n        \"on\": []",
				"name: pstn\n    match:\n      methods:\n        - INVITE\n        - MESSAGE\n      ruri_user: ^\\+49\n    dispatch:\n      set: 1\n      alg: 10\n      failover:\n        mark: ip\n        \"on\":\n          - timeout\n          - 5xx",
				// failure_route[MARK] retries everything but the 486 its
				// exit guard keeps.
				"header:\n        name: X-Tenant\n        regex: ^acme$\n    dispatch:\n      set: 4\n      alg: 9\n      mode: domain\n      limit: 2\n      failover:\n        mark: i\n        \"on\":\n          - timeout\n          - 3xx\n          - \"400\"",
				"- \"485\"\n          - \"487\"",
				"- \"499\"\n          - 5xx\n          - 6xx",
				"- name: request-3\n    dispatch:\n      set: 5\n      alg: 4\n      failover:\n        \"on\": []",
			},
			notYAML: []string{"use_default", "flags: 0", `"486"`, "4xx"},
			report: []string{
				`kamailio.cfg:28: not translated: condition of ds_select_dst("5", "4"): condition uri == myself: the route matches more requests than Kamailio's branch`,
				`kamailio.cfg:39: translated: ds_mark_dst: routes "pstn": failover.mark: ip`,
				`kamailio.cfg:39: not translated: condition of ds_mark_dst: sipdispatch marks on every failover code`,
			},
			noReport: []string{"has_totag", "CANCEL", "mf_process"},
		},
		{
			name:  "include, hash_pvar with an assigned avp, stateless forward",
			cfg:   "include_file \"ds.cfg\"\nimport_file \"missing.cfg\"\nrequest_route {\n $avp(i:273) = $hdr(X-Account);\n $var(k) = $fU + \"@\" + $fd;\n if (!ds_select_dst(1, 7)) { drop; }\n forward();\n}\n",
			files: []string{"ds.cfg", `modparam("dispatcher", "hash_pvar", "$(avp(i:273){s.tolower})$var(k)")` + "\n"},
			yaml: []string{"hash_pvar: $(avp(i:273){s.tolower})$var(k) # from ds.cfg:1", `$avp(i:273): $hdr(X-Account)`, `$var(k): $fU@$fd`,
				"mode: stateless", "set: 1\n      alg: 7"},
			notYAML: []string{`"on"`},
			report:  []string{`kamailio.cfg:2: not translated: include missing.cfg: not read`, `kamailio.cfg:3: translated: forward(): proxy.mode: stateless`},
		},
		{
			name:     "an exit guard restricts what follows",
			cfg:      "request_route {\n if (!ds_is_from_list()) { sl_send_reply(\"403\", \"Forbidden\"); exit; }\n if (ds_select_dst(\"1\", \"8\")) { t_relay(); }\n}\n",
			yaml:     []string{"match:\n      from_set: any\n    dispatch:\n      set: 1\n      alg: 8"},
			noReport: []string{"not translated"},
		},
		{
			name:    "variables as set ids are not translated",
			cfg:     "request_route {\n ds_select_dst(\"$var(set)\", \"4\");\n ds_select(\"1\", \"4\");\n}\n",
			report:  []string{`kamailio.cfg:2: not translated: ds_select_dst("$var(set)", "4"): argument "$var(set)" is not a number`, `kamailio.cfg:3: not translated: ds_select("1", "4"): ds_select only fills`},
			notYAML: []string{"routes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y, rep := translate(t, tt.cfg, tt.files...)
			for _, want := range tt.yaml {
				if !strings.Contains(y, want) {
					t.Errorf("YAML lacks %q:\n%s", want, y)
				}
			}
			for _, bad := range tt.notYAML {
				if strings.Contains(y, bad) {
					t.Errorf("YAML has %q:\n%s", bad, y)
				}
			}
			for _, want := range tt.report {
				if !strings.Contains(rep, want) {
					t.Errorf("report lacks %q:\n%s", want, rep)
				}
			}
			for _, bad := range tt.noReport {
				if strings.Contains(rep, bad) {
					t.Errorf("report mentions %q:\n%s", bad, rep)
				}
			}
		})
	}
}

// A config the translator does not understand is reported, never a panic.
func FuzzTranslate(f *testing.F) {
	f.Add("request_route { if (is_method(\"INVITE\") && $rU =~ \"^1\") { ds_select_dst(\"1\", \"4\"); t_relay(); } }")
	f.Add("#!ifdef X\nlisten=udp:1.2.3.4\n#!endif\nfailure_route[F] { if (t_check_status(\"5\")) { ds_next_dst(); } }")
	f.Add("request_route { if (!(ds_is_from_list( { } ( ) ;")
	f.Fuzz(func(t *testing.T, cfg string) {
		path := filepath.Join(t.TempDir(), "k.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Translate(path, Options{DispatcherKey: keys}); err != nil {
			t.Fatal(err)
		}
	})
}
