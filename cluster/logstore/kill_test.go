package logstore

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// childEnv names the directory a re-executed test binary writes into until
// it is killed (see TestMain).
const childEnv = "LOGSTORE_KILL_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		writeUntilKilled(dir)
		return
	}
	os.Exit(m.Run())
}

// writeUntilKilled appends batches of 1..7 entries after whatever the log
// holds, compacting the head now and then, and prints each acknowledged
// last index on stdout.
func writeUntilKilled(dir string) {
	s, err := Open(dir, Options{SegmentSize: 4 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	last, _ := s.LastIndex()
	for n := uint64(0); ; n++ {
		ls := entries(last+1, last+1+n%7, 1)
		if err := s.StoreLogs(ls); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		last = ls[len(ls)-1].Index
		if n%40 == 39 {
			first, _ := s.FirstIndex()
			if err := s.DeleteRange(first, last-60); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		fmt.Printf("%d\n", last)
	}
}

// Every entry whose StoreLogs returned is there after the writer is killed
// with SIGKILL mid-write, round after round on the same directory.
func TestKillDuringWrites(t *testing.T) {
	dir := t.TempDir()
	var acked uint64
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A child that stops writing is killed, which ends the scan below.
		stuck := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		// Kill after a number of acknowledgements that varies per round,
		// so the kill lands at different points of a write.
		want := 150 + 37*round
		lines := 0
		for lines < want && sc.Scan() {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = n
			lines++
		}
		stuck.Stop()
		if lines < want {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child acknowledged %d writes, want %d", round, lines, want)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		s := open(t, dir, 4<<10)
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if last < acked {
			t.Fatalf("round %d: last index %d after the kill, but %d had been acknowledged", round, last, acked)
		}
		if first == 0 || first > acked-50 {
			t.Fatalf("round %d: first index %d, last acknowledged %d", round, first, acked)
		}
		check(t, s, first, last, term1)
		s.Close()
		t.Logf("round %d: acknowledged %d, found %d..%d", round, acked, first, last)
	}
}
