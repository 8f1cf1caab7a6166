package sip

import (
	"fmt"
	"net"
	"testing"
)

// One read takes every datagram queued on the socket, up to the batch size,
// each with its own bytes and sender.
func TestBatchReaderTakesQueuedDatagrams(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := newUDPConn(pc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, b := sender(t), sender(t)
	const queued = udpBatch + 3
	for i := range queued {
		src := a
		if i%2 == 1 {
			src = b
		}
		// On loopback a datagram is in the receiver's queue once WriteTo returns.
		if _, err := src.WriteTo(fmt.Appendf(nil, "d%d", i), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	r := newBatchReader(udpBatch, 100)
	var sizes []int
	i := 0
	err = r.readBatches(c, func(r *batchReader, n int) bool {
		sizes = append(sizes, n)
		for j := range n {
			data, from := r.datagram(j)
			src := a
			if i%2 == 1 {
				src = b
			}
			if string(data) != fmt.Sprint("d", i) || from.String() != src.LocalAddr().String() {
				t.Errorf("datagram %d: %q from %v, want d%d from %v", i, data, from, i, src.LocalAddr())
			}
			i++
		}
		return i < queued
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{udpBatch, queued - udpBatch}) {
		t.Fatalf("read batches of %v, want [%d %d]", sizes, udpBatch, queued-udpBatch)
	}
}
