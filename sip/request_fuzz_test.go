package sip

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// FuzzRequestFrom feeds arbitrary bytes through sipgo's parser and, for every
// request it accepts, through RequestFrom and the hash-key extraction every
// algorithm uses (docs/operations.md#bad-input): none may panic, and the
// keys must come from the extracted fields.
func FuzzRequestFrom(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("INVITE sip:+4930@gw SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b:5080>;tag=1\r\n" +
		"To: <sips:c@d>\r\nCall-ID:  x \r\nCSeq: 1 INVITE\r\nProxy-Authorization: Digest username=\"u@r\"\r\nContent-Length: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := sipmsg.ParseMessage(b)
		if err != nil {
			return
		}
		req, ok := msg.(*sipmsg.Request)
		if !ok {
			return
		}
		r := RequestFrom(req, "127.0.0.1:5060", "udp")
		for _, uri := range []string{r.RURI, r.From, r.To} {
			for _, userOnly := range []bool{false, true} {
				u, h, ok := dispatch.URIHashKeys(uri, userOnly)
				if !ok {
					continue
				}
				if !strings.Contains(uri, u) || (userOnly && h != "") {
					t.Fatalf("URIHashKeys(%q, %v) = %q, %q: keys not taken from the URI", uri, userOnly, u, h)
				}
				_ = dispatch.Hash(u, h)
			}
		}
		_ = dispatch.Hash(dispatch.CallIDKey(r.CallID), "")
		if k, ok := dispatch.AuthUserKey(r.AuthUser); ok {
			_ = dispatch.Hash(k, "")
		}
	})
}
