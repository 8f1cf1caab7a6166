package actors_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// A registry runs one actor per set; Select asks the set's actor for a
// selection, here round-robin over three gateways of a Kamailio list.
func ExampleRegistry_Select() {
	list := `1 sip:10.0.0.1:5060 0 0 duid=gw1
1 sip:10.0.0.2:5060 0 0 duid=gw2
1 sip:10.0.0.3:5060 0 0 duid=gw3
`
	sets, err := dispatch.ParseList(strings.NewReader(list), "dispatcher.list")
	if err != nil {
		panic(err)
	}
	cfg := dispatch.DefaultConfig()
	reg, err := actors.NewRegistry(&cfg, sets, actors.Options{Seed: 1})
	if err != nil {
		panic(err)
	}
	defer reg.Stop()
	for i := 0; i < 4; i++ {
		req := &dispatch.Request{Method: "INVITE", CallID: fmt.Sprintf("call-%d", i)}
		sel, err := reg.Select(context.Background(), 1, dispatch.AlgRoundRobin, req, 0)
		if err != nil {
			panic(err)
		}
		fmt.Println(sel.Dests[0].Attrs.DUID)
	}
	// Output:
	// gw3
	// gw2
	// gw1
	// gw3
}
