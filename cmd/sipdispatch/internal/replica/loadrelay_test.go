package replica

import (
	"reflect"
	"testing"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// A handed-over load command decodes to itself; anything but a confirm,
// move or removal with a Call-ID is refused.
func TestLoadHandOverCodec(t *testing.T) {
	good := []dispatch.Command{
		{Kind: dispatch.CmdLoadRemove, At: 1, Set: -1, CallID: "a@b"},
		{Kind: dispatch.CmdLoadConfirm, At: 2, Set: 3, CallID: "c"},
		{Kind: dispatch.CmdLoadMove, At: 3, Set: 3, URI: "sip:10.0.0.1", CallID: "c"},
	}
	for _, c := range good {
		b, err := encodeLoadHandOver(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeLoadHandOver(b)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%+v: decoded %+v, %v", c, got, err)
		}
	}
	for _, c := range []dispatch.Command{
		{Kind: dispatch.CmdLoadAdd, At: 1, Set: 1, URI: "sip:x", CallID: "a"},
		{Kind: dispatch.CmdLoadRemove, At: 1, Set: 1},
		{Kind: dispatch.CmdMark, At: 1, Set: 1, URI: "all"},
		{Kind: dispatch.CmdLoadRemove, At: 1, Set: 1, CallID: "a", Dests: []dispatch.Destination{{URI: "sip:x"}}},
	} {
		b, err := dispatch.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeLoadHandOver(append([]byte{loadHandOverV1}, b...)); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func FuzzDecodeLoadHandOver(f *testing.F) {
	b, _ := encodeLoadHandOver(dispatch.Command{Kind: dispatch.CmdLoadRemove, At: 1, Set: -1, CallID: "a@b"})
	f.Add(b)
	f.Add([]byte{loadHandOverV1, 1, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeLoadHandOver(b)
		if err != nil {
			return
		}
		b2, err := encodeLoadHandOver(c)
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", c, err)
		}
		if c2, err := decodeLoadHandOver(b2); err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, c, c2)
		}
	})
}
