package main

import (
	"strings"
	"testing"
)

// hash_pvar and hash_pvar_vars errors name the file:line of their key, and
// a declared $avp/$var loads (docs/configuration.md#template-variables).
func TestHashPVarConfigErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"ok", "dispatcher:\n  hash_pvar: '$(avp(i:273){s.tolower})|$(ci{s.select,0,@})'\n  hash_pvar_vars:\n    '$avp(i:273)': '$hdr(X-Account)'\n", ""},
		{"undeclared avp", "dispatcher:\n  list_file: x.list\n  hash_pvar: '$avp(i:273)'\n",
			`sipdispatch.yaml:3: dispatcher.hash_pvar: "$avp(i:273)": template "$avp(i:273)": offset 0: $avp(i:273) has no value here`},
		{"unsupported transformation", "dispatcher:\n  hash_pvar: '$(ci{s.md5})'\n",
			`sipdispatch.yaml:2: dispatcher.hash_pvar: "$(ci{s.md5})": template "$(ci{s.md5})": offset 0: transformation {s.md5} is not supported`},
		{"bad declared name", "dispatcher:\n  hash_pvar: '$ci'\n  hash_pvar_vars:\n    '$hdr(X)': '$ci'\n",
			`sipdispatch.yaml:3: dispatcher.hash_pvar_vars: "$hdr(X)": only $avp(...) and $var(...) variables can be declared`},
		{"bad declared value", "dispatcher:\n  hash_pvar: '$ci'\n  hash_pvar_vars:\n    '$var(x)': '$(ci{s.substr,1})'\n",
			`sipdispatch.yaml:3: dispatcher.hash_pvar_vars: "$var(x)": "$(ci{s.substr,1})": template "$var(x)": offset 0: $var(x): template "$(ci{s.substr,1})": offset 0: transformation {s.substr,1}: want {s.substr,OFFSET,LENGTH}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(writeConfig(t, tt.body))
			if err == nil {
				err = c.Validate()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("want no error, got %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
