package upgrader

// The middle rounds of a pre-copy over the real handoff socket: the old
// process's decision after each round, a new process dying in one, an old
// process dying after one, a middle round that fails to restore.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
)

// TestNextRound: the decision after a round sent while running.
func TestNextRound(t *testing.T) {
	const big = 1_000_000
	for _, tt := range []struct {
		name   string
		round  int
		n      int64
		prev   int64
		took   time.Duration
		wanted bool
	}{
		{"a large first round", 1, big, 0, 100 * time.Millisecond, true},
		{"a small first round", 1, smallRound, 0, 100 * time.Millisecond, false},
		{"a quick first round", 1, big, 0, quickRound, false},
		{"a middle round that shrank", 2, big / 2, big, 50 * time.Millisecond, true},
		{"a middle round that shrank to just under 4/5", 2, big*4/5 - 1, big, 50 * time.Millisecond, true},
		{"a middle round that shrank to 4/5", 2, big * 4 / 5, big, 50 * time.Millisecond, false},
		{"a middle round that grew", 3, big, big / 2, 50 * time.Millisecond, false},
		{"a small middle round", 2, smallRound, big, 50 * time.Millisecond, false},
		{"the last middle round allowed", maxMiddleRounds, big / 2, big, 50 * time.Millisecond, true},
		{"past the most middle rounds", maxMiddleRounds + 1, big / 2, big, 50 * time.Millisecond, false},
	} {
		if got := nextRound(tt.round, tt.n, tt.prev, tt.took); got != tt.wanted {
			t.Errorf("%s: nextRound(%d, %d, %d, %v) = %v, want %v", tt.name, tt.round, tt.n, tt.prev, tt.took, got, tt.wanted)
		}
	}
}

// TestPreCopyMiddleRoundsOldSide: a map that changes a lot during each
// round gets middle rounds while they shrink, each holding what changed
// during the round before, nothing frozen; once a round shrinks no more,
// the old process freezes and sends the last. The new process ends with
// the map as it was at the freeze; the log has each round; Result counts
// the rounds and their bytes.
func TestPreCopyMiddleRoundsOldSide(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	live := newLiveMap(30000)
	o := startOldSide(t, Options{}, live)
	dst := newLiveMap(0)
	reg := childRegistry(t, dst.participant())
	o.request(t, reg.Accepts())
	pre := socketConn(t, o.answer(t, msgPreState))
	if _, err := state.ReceivePreCopy(context.Background(), pre, reg); err != nil {
		t.Fatal(err)
	}
	pre.Close()
	// Keys changed during each round, which the next round holds: 8000
	// (round 2, shrank from the first: a middle round follows), 4000
	// (round 3, shrank: another), 3900 (round 4, not under 4/5 of round
	// 3: the last round next).
	changes := map[int]int{1: 8000, 2: 4000, 3: 3900}
	final, middles := o.untilLast(t, reg, 1, func(round int) {
		if live.count("Freeze") != 0 {
			t.Errorf("frozen in round %d", round)
		}
		for i := range changes[round] {
			live.set(fmt.Sprintf("key-%07d", i), round*100000+i)
		}
		time.Sleep(2 * quickRound) // a round that is not quick
	})
	live.set("between the last rounds", 1)
	_, err := state.Receive(context.Background(), final, reg)
	final.Close()
	if err != nil {
		t.Fatalf("Receive (last round): %v", err)
	}
	if middles != 3 {
		t.Errorf("%d middle rounds, want 3", middles)
	}
	if got, want := dst.snapshot(), live.snapshot(); !maps.Equal(got, want) {
		t.Errorf("the new process holds %d entries, the old one %d at the freeze", len(got), len(want))
	}
	if dst.count("PreCopy.RestoreDelta") != 4 || live.count("PreCopy.Delta") != 4 || live.count("Freeze") != 1 {
		t.Errorf("calls: new %v, old %v", dst.calls, live.calls)
	}
	got := o.succeed(t)
	if got.res.PreCopyRounds != 4 {
		t.Errorf("Result.PreCopyRounds = %d, want 4", got.res.PreCopyRounds)
	}
	// Each round in the log: sent, and restored with the decision after it.
	lines := strings.Split(o.log.String(), "\n")
	logged := func(msg, attrs string) bool {
		for _, l := range lines {
			if strings.Contains(l, `msg="`+msg+`"`) && strings.Contains(l, attrs) {
				return true
			}
		}
		return false
	}
	for round := 1; round <= 4; round++ {
		if !logged("pre-copy sent", fmt.Sprintf(" round=%d bytes=", round)) {
			t.Errorf("no log of round %d sent:\n%s", round, o.log.String())
		}
		if !logged("new process restored the pre-copy", fmt.Sprintf(" round=%d bytes=", round)) {
			t.Errorf("no log of round %d restored:\n%s", round, o.log.String())
		}
	}
	if !logged("new process restored the pre-copy", "another_round=false") {
		t.Errorf("no log of the decision to freeze after round 4:\n%s", o.log.String())
	}
	if live.count("PreCopy.Stop") != 0 || live.count("Thaw") != 0 {
		t.Errorf("old side calls %v", live.calls)
	}
}

// TestPreCopyNewDiesInMiddleRound: a new process that dies while it reads a
// middle round fails the upgrade; the old process never froze, stops the
// tracking and carries on, its map still changing.
func TestPreCopyNewDiesInMiddleRound(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	live := newLiveMap(60000)
	o := startOldSide(t, Options{}, live)
	reg := childRegistry(t, newLiveMap(0).participant())
	o.request(t, reg.Accepts())
	pre := socketConn(t, o.answer(t, msgPreState))
	if _, err := state.ReceivePreCopy(context.Background(), pre, reg); err != nil {
		t.Fatal(err)
	}
	pre.Close()
	for i := range 50000 { // a large middle round
		live.set(fmt.Sprintf("key-%07d", i), -i)
	}
	time.Sleep(2 * quickRound)
	if err := o.child.send(message{Type: msgPreRestored, Attempt: 1, Round: 1}, nil); err != nil {
		t.Fatal(err)
	}
	mid := socketConn(t, o.answer(t, msgPreState))
	io.ReadFull(mid, make([]byte, 4096)) // part of it, then dies
	mid.Close()
	waitLog(t, o, "sending a middle round of the pre-copy failed")
	err := o.fail(t, "exit status 7")
	if errors.Is(err, ErrStateRejected) {
		t.Errorf("Upgrade: %v; want the new process's death, not a rejection", err)
	}
	if live.count("Freeze") != 0 || live.count("PreCopy.Stop") != 1 || live.count("PreCopy.Delta") != 1 || live.count("Thaw") != 0 {
		t.Errorf("old side calls %v: want the middle round's Delta, then Stop, no Freeze", live.calls)
	}
	live.set("still running", 1)
	if _, ok := live.snapshot()["still running"]; !ok {
		t.Error("the old process's participant stopped changing")
	}
}
