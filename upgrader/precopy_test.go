package upgrader

// The two-round (pre-copy) handoff over the real handoff socket, each side
// against the other played by the test: both rounds, every failure between
// them, and peers of an older release in both directions.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/state"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// liveMap is a participant with a two-round handoff whose map changes while
// the handoff runs, from any goroutine (set), until it is frozen. Its
// first round is the whole map as JSON, its delta the keys set since.
type liveMap struct {
	mu       sync.Mutex
	m        map[string]int
	tracking bool
	dirty    map[string]bool
	want     bool
	frozen   bool

	failFreeze  bool   // Freeze fails
	panicWant   bool   // PreCopy.Want panics
	failCapture bool   // PreCopy.Capture fails
	failRestore string // the PreCopy callback of the new side that fails
	calls       map[string]int
}

func newLiveMap(n int) *liveMap {
	l := &liveMap{m: make(map[string]int), want: true, calls: make(map[string]int)}
	for i := range n {
		l.m[fmt.Sprintf("key-%07d", i)] = i
	}
	return l
}

func (l *liveMap) set(k string, v int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.frozen {
		return
	}
	l.m[k] = v
	if l.tracking {
		l.dirty[k] = true
	}
}

func (l *liveMap) count(cb string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[cb]
}

func (l *liveMap) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m)
}

// called records cb and says whether it is to fail.
func (l *liveMap) called(cb string) error {
	l.calls[cb]++
	if l.failRestore == cb {
		return fmt.Errorf("%s fails", cb)
	}
	return nil
}

func (l *liveMap) participant() state.Participant {
	writeJSON := func(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
	replace := func(r io.Reader) error {
		m := make(map[string]int)
		if err := json.NewDecoder(r).Decode(&m); err != nil {
			return err
		}
		l.m = m
		return nil
	}
	return state.Participant{
		Name:    "live",
		Version: 1,
		Freeze: func(context.Context) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.calls["Freeze"]++
			if l.failFreeze {
				return errors.New("cannot freeze now")
			}
			l.frozen = true
			return nil
		},
		Thaw: func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.calls["Thaw"]++
			l.frozen = false
		},
		Capture: func(w io.Writer) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.calls["Capture"]++
			return writeJSON(w, l.m)
		},
		Restore: func(r io.Reader) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.calls["Restore"]++
			return replace(r)
		},
		Reset: func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.calls["Reset"]++
			l.m = make(map[string]int)
		},
		PreCopy: &state.PreCopy{
			Want: func() bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				if l.panicWant {
					var m map[string]int
					m["want"]++ // assignment to entry in nil map
				}
				return l.want
			},
			Capture: func(w io.Writer) error {
				l.mu.Lock()
				l.calls["PreCopy.Capture"]++
				l.tracking, l.dirty = true, make(map[string]bool)
				m, fail := maps.Clone(l.m), l.failCapture
				l.mu.Unlock()
				if fail {
					return errors.New("the first round cannot be captured")
				}
				// Written without the lock: the map changes meanwhile.
				return writeJSON(w, m)
			},
			Delta: func(w io.Writer) error {
				l.mu.Lock()
				defer l.mu.Unlock()
				l.calls["PreCopy.Delta"]++
				d := make(map[string]int, len(l.dirty))
				for k := range l.dirty {
					d[k] = l.m[k]
				}
				// A middle round starts the tracking over; the last
				// (frozen) ends it.
				l.tracking, l.dirty = !l.frozen, make(map[string]bool)
				return writeJSON(w, d)
			},
			Stop: func() {
				l.mu.Lock()
				defer l.mu.Unlock()
				l.calls["PreCopy.Stop"]++
				l.tracking, l.dirty = false, nil
			},
			Restore: func(r io.Reader) error {
				l.mu.Lock()
				defer l.mu.Unlock()
				if err := l.called("PreCopy.Restore"); err != nil {
					return err
				}
				return replace(r)
			},
			RestoreDelta: func(r io.Reader) error {
				l.mu.Lock()
				defer l.mu.Unlock()
				if err := l.called("PreCopy.RestoreDelta"); err != nil {
					return err
				}
				d := make(map[string]int)
				if err := json.NewDecoder(r).Decode(&d); err != nil {
					return err
				}
				maps.Copy(l.m, d)
				return nil
			},
		},
	}
}

// syncBuffer is a log destination written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// oldSide is an old process whose registry holds live, upgrading to a new
// process that the test plays on child, its pid a real process.
type oldSide struct {
	u     *Upgrader
	ff    *captureFlip
	child handoffConn
	pid   int
	log   *syncBuffer
	done  chan upgradeOutcome
}

type upgradeOutcome struct {
	res Result
	err error
}

func startOldSide(t *testing.T, opts Options, live *liveMap) *oldSide {
	t.Helper()
	ff := &captureFlip{fakeFlip: newFakeFlip(), files: map[string]*os.File{}}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	u, err := newUpgrader(ff, opts, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	if err := u.State().Register(live.participant()); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	child, err := fileConn(ff.files[handoffFileName+"1"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Close() })
	proc, _, stop := sleeper(t)
	t.Cleanup(stop)
	o := &oldSide{u: u, ff: ff, child: child, pid: proc.Process.Pid, log: logs, done: make(chan upgradeOutcome, 1)}
	go func() {
		res, err := u.Upgrade(context.Background())
		o.done <- upgradeOutcome{res, err}
	}()
	<-ff.started
	child.SetReadDeadline(time.Now().Add(10 * time.Second))
	return o
}

// request says hello and asks for the state, reading what reg reads.
func (o *oldSide) request(t *testing.T, accepts state.Accepts) {
	t.Helper()
	for _, m := range []message{{Type: msgHello, Pid: o.pid, Attempt: 1}, {Type: msgStateRequest, Accepts: &accepts}} {
		if err := o.child.send(m, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// answer reads the old process's answer, which must be of type want and
// carry one socket, returned.
func (o *oldSide) answer(t *testing.T, want string) *os.File {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(4*4))
	m, oobn, err := o.child.recv(oob)
	files := rights(oob[:oobn])
	if err != nil || m.Type != want || len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		t.Fatalf("answer: %+v with %d files, %v; want %q with its socket", m, len(files), err, want)
	}
	return files[0]
}

// fail ends the attempt as tableflip does when the new process exits, and
// returns Upgrade's error.
func (o *oldSide) fail(t *testing.T, why string) error {
	t.Helper()
	o.ff.result <- errors.New(why)
	got := <-o.done
	if got.err == nil {
		t.Fatal("Upgrade succeeded")
	}
	return got.err
}

// untilLast plays the new process from its "pre-restored" of round on:
// it confirms the round, restores each middle round that follows, calling
// between(round) before it confirms each, and returns the last round's
// socket and the number of middle rounds.
func (o *oldSide) untilLast(t *testing.T, reg *state.Registry, round int, between func(round int)) (*net.UnixConn, int) {
	t.Helper()
	for ; ; round++ {
		if between != nil {
			between(round)
		}
		if err := o.child.send(message{Type: msgPreRestored, Attempt: 1, Round: round}, nil); err != nil {
			t.Fatal(err)
		}
		oob := make([]byte, unix.CmsgSpace(4*4))
		m, oobn, err := o.child.recv(oob)
		files := rights(oob[:oobn])
		if err != nil || len(files) != 1 || (m.Type != msgState && (m.Type != msgPreState || m.Round != round+1)) {
			for _, f := range files {
				f.Close()
			}
			t.Fatalf("after round %d: %+v with %d files, %v; want %q, or %q of round %d", round, m, len(files), err, msgState, msgPreState, round+1)
		}
		conn := socketConn(t, files[0])
		if m.Type == msgState {
			return conn, round - 1
		}
		_, err = state.ReceivePreCopy(context.Background(), conn, reg)
		conn.Close()
		if err != nil {
			t.Fatalf("ReceivePreCopy of round %d: %v", round+1, err)
		}
	}
}

// succeed ends the attempt as a new process does that restored the state
// and became ready, and returns what Upgrade returned, which succeeded.
func (o *oldSide) succeed(t *testing.T) upgradeOutcome {
	t.Helper()
	if err := o.child.send(message{Type: msgRestored, Attempt: 1}, nil); err != nil {
		t.Fatal(err)
	}
	o.ff.result <- nil
	got := <-o.done
	if got.err != nil {
		t.Fatalf("Upgrade: %v", got.err)
	}
	return got
}

// socketConn turns a received socket into the stream it is.
func socketConn(t *testing.T, f *os.File) *net.UnixConn {
	t.Helper()
	c, err := fileUnixConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPreCopyOldSide: the old process's side of the two rounds. The first
// goes with the participants running (nothing frozen, the map changes
// meanwhile); only once the new process says it restored it does the old
// one freeze and send the second, holding what changed: the new process
// ends with the map as it was at the freeze. The log says "pre-copy sent",
// then "participants frozen", then "state sent"; Result has both sizes.
func TestPreCopyOldSide(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the cleanups of startOldSide
	live := newLiveMap(20000)
	o := startOldSide(t, Options{}, live)
	dst := newLiveMap(0)
	reg := childRegistry(t, dst.participant())
	o.request(t, reg.Accepts())

	pre := socketConn(t, o.answer(t, msgPreState))
	// The map runs on while its first round travels.
	live.set("during", 1)
	if _, err := state.ReceivePreCopy(context.Background(), pre, reg); err != nil {
		t.Fatalf("ReceivePreCopy: %v", err)
	}
	pre.Close()
	if n := live.count("Freeze"); n != 0 {
		t.Fatalf("the old process froze (%d) before the first round was restored", n)
	}
	live.set("key-0000001", -1)
	live.set("between", 2)
	final, middles := o.untilLast(t, reg, 1, nil)
	t.Logf("%d middle rounds", middles)
	info, err := state.Receive(context.Background(), final, reg)
	final.Close()
	if err != nil {
		t.Fatalf("Receive (second round): %v", err)
	}
	live.set("after the freeze", 3) // frozen: refused
	if got, want := dst.snapshot(), live.snapshot(); !maps.Equal(got, want) {
		t.Errorf("the new process holds %d entries, the old one %d at the freeze", len(got), len(want))
	}
	if dst.count("PreCopy.Restore") != 1 || dst.count("PreCopy.RestoreDelta") != 1+middles || dst.count("Restore") != 0 {
		t.Errorf("new side calls %v", dst.calls)
	}
	var delta *state.Section
	for i := range info.Sections {
		if info.Sections[i].Name == "live" {
			delta = &info.Sections[i]
		}
	}
	if delta == nil || !delta.Delta {
		t.Fatalf("second round sections %+v: want live as a delta", info.Sections)
	}
	got := o.succeed(t)
	if got.res.PreCopyBytes < 20000*10 || got.res.StateBytes >= got.res.PreCopyBytes/10 {
		t.Errorf("Result: pre-copy %d bytes, state %d bytes; want the second round a fraction of the first", got.res.PreCopyBytes, got.res.StateBytes)
	}
	if live.count("PreCopy.Stop") != 0 || live.count("Thaw") != 0 || live.count("Capture") != 0 {
		t.Errorf("old side calls %v", live.calls)
	}
	logs := o.log.String()
	i1, i2, i3 := strings.Index(logs, `msg="pre-copy sent"`), strings.Index(logs, `msg="participants frozen"`), strings.Index(logs, `msg="state sent"`)
	if i1 < 0 || i2 < i1 || i3 < i2 {
		t.Errorf("log lines out of order or missing (pre-copy sent %d, participants frozen %d, state sent %d):\n%s", i1, i2, i3, logs)
	}
}

// TestPreCopyOldSideFailures: whatever ends the attempt between the rounds,
// the old process was never frozen, carries on, and stops the tracking:
// the new process rejects the first round, dies during it, hangs in it
// until the upgrade's deadline, or the freeze that follows it fails.
func TestPreCopyOldSideFailures(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries int
		opts    Options
		// play is the new process after its state request; it returns
		// how tableflip sees it end.
		play func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string
		want error // wrapped by Upgrade's error, if not nil
		// freezes: Freeze was called (and failed).
		freezes int
		// panicWant: Want panics, and no first round goes.
		panicWant bool
	}{
		{name: "Want panics", entries: 100, want: ErrStateRejected, panicWant: true,
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				if m, _, err := o.child.recv(nil); err != nil || m.Type != msgRefused || !strings.Contains(m.Reason, "PreCopy.Want") {
					t.Errorf("answer: %+v, %v; want refused naming PreCopy.Want", m, err)
				}
				return "exit status 1"
			}},
		{name: "first round fails to capture", entries: 100, want: ErrStateRejected,
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				pre := socketConn(t, o.answer(t, msgPreState))
				defer pre.Close()
				if _, err := state.ReceivePreCopy(context.Background(), pre, reg); err == nil {
					t.Error("a first round whose capture failed was restored")
				}
				o.child.send(message{Type: msgRejected, Reason: "unexpected EOF", Attempt: 1}, nil)
				return "exit status 1"
			}},
		{name: "rejects the first round", entries: 100, want: ErrStateRejected,
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				pre := socketConn(t, o.answer(t, msgPreState))
				defer pre.Close()
				io.Copy(io.Discard, pre) // read, then refuse it
				o.child.send(message{Type: msgRejected, Reason: "cannot use it", Attempt: 1}, nil)
				return "exit status 1"
			}},
		{name: "dies during the first round", entries: 50000,
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				pre := socketConn(t, o.answer(t, msgPreState))
				buf := make([]byte, 4096)
				io.ReadFull(pre, buf) // part of it
				pre.Close()
				waitLog(t, o, "sending the pre-copy failed")
				return "exit status 7"
			}},
		{name: "hangs in the first round", entries: 50000, opts: Options{UpgradeTimeout: 300 * time.Millisecond},
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				pre := socketConn(t, o.answer(t, msgPreState))
				defer pre.Close()
				// Reads nothing: the old process's send stops at
				// the deadline, and it never froze.
				waitLog(t, o, "sending the pre-copy failed")
				live.set("still running", 1)
				if _, ok := live.snapshot()["still running"]; !ok {
					t.Error("the old process's participant stopped changing")
				}
				return "new child timed out"
			}},
		{name: "freeze fails after the first round", entries: 100, want: ErrStateRejected, freezes: 1,
			play: func(t *testing.T, o *oldSide, live *liveMap, reg *state.Registry) string {
				pre := socketConn(t, o.answer(t, msgPreState))
				if _, err := state.ReceivePreCopy(context.Background(), pre, reg); err != nil {
					t.Fatal(err)
				}
				pre.Close()
				live.mu.Lock()
				live.failFreeze = true
				live.mu.Unlock()
				o.child.send(message{Type: msgPreRestored, Attempt: 1, Round: 1}, nil)
				if m, _, err := o.child.recv(nil); err != nil || m.Type != msgRefused || !strings.Contains(m.Reason, "cannot freeze now") {
					t.Errorf("after the pre-restored: %+v, %v; want refused", m, err)
				}
				return "exit status 1"
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the cleanups of startOldSide
			live := newLiveMap(tt.entries)
			live.panicWant = tt.panicWant
			live.failCapture = tt.name == "first round fails to capture"
			o := startOldSide(t, tt.opts, live)
			reg := childRegistry(t, newLiveMap(0).participant())
			o.request(t, reg.Accepts())
			err := o.fail(t, tt.play(t, o, live, reg))
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Upgrade: %v, want %v", err, tt.want)
			}
			if n := live.count("Freeze"); n != tt.freezes {
				t.Errorf("Freeze called %d times, want %d", n, tt.freezes)
			}
			stops := 1
			if live.failCapture && !strings.Contains(err.Error(), "could not send the first round of its state") {
				t.Errorf("Upgrade: %v; want this process's failure to capture as the reason", err)
			}
			if tt.panicWant {
				stops = 0 // no first round to stop
				var ue *UpgradeError
				if !errors.As(err, &ue) || ue.Step != "state:live" || !errors.Is(err, ErrStateRejected) {
					t.Errorf("Upgrade: %v, want an UpgradeError at step state:live", err)
				}
			}
			if live.count("PreCopy.Stop") != stops || live.count("PreCopy.Delta") != 0 || live.count("Thaw") != 0 {
				t.Errorf("old side calls %v: want %d Stop, no Delta, no Thaw", live.calls, stops)
			}
			if strings.Contains(o.log.String(), "participants frozen") {
				t.Error("the old process logged a freeze")
			}
			// The next attempt starts afresh: a one-round upgrade
			// of a new process without PreCopy works.
			select {
			case <-o.u.Exit():
				t.Fatal("Exit closed after a failed upgrade")
			default:
			}
		})
	}
}

// waitLog waits up to 10 s for the old process to log msg.
func waitLog(t *testing.T, o *oldSide, msg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(o.log.String(), msg) {
			return
		}
	}
	t.Fatalf("the old process did not log %q:\n%s", msg, o.log.String())
}

// TestPreCopyOneRoundPeers: one round, exactly as before the pre-copy (the
// answer to the state request is "state", nothing is captured before the
// freeze), when the new process is of a release without pre-copy (its
// accepts have no pre_copy), when no participant wants one, and when the
// new process needs a migration of the section (a rollback).
func TestPreCopyOneRoundPeers(t *testing.T) {
	for _, tt := range []struct {
		name    string
		accepts func(a state.Accepts) state.Accepts
		want    bool
	}{
		{"older new process", func(a state.Accepts) state.Accepts { a.PreCopy = nil; return a }, true},
		{"nobody wants it", func(a state.Accepts) state.Accepts { return a }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the cleanups of startOldSide
			live := newLiveMap(100)
			live.want = tt.want
			o := startOldSide(t, Options{}, live)
			dst := newLiveMap(0)
			reg := childRegistry(t, dst.participant())
			accepts := tt.accepts(reg.Accepts())
			// An older release decodes what it knows: the JSON
			// of its request has no pre_copy at all.
			if b, _ := json.Marshal(accepts); tt.name == "older new process" && strings.Contains(string(b), "pre_copy") {
				t.Fatalf("accepts %s", b)
			}
			o.request(t, accepts)
			final := socketConn(t, o.answer(t, msgState))
			if _, err := state.Receive(context.Background(), final, reg); err != nil {
				t.Fatal(err)
			}
			final.Close()
			o.child.send(message{Type: msgRestored, Attempt: 1}, nil)
			o.ff.result <- nil
			if got := <-o.done; got.err != nil || got.res.PreCopyBytes != 0 {
				t.Fatalf("Upgrade: %+v, %v", got.res, got.err)
			}
			if live.count("PreCopy.Capture") != 0 || live.count("Capture") != 1 || dst.count("Restore") != 1 {
				t.Errorf("calls: old %v, new %v; want one round", live.calls, dst.calls)
			}
			if !maps.Equal(dst.snapshot(), live.snapshot()) {
				t.Error("the new process holds another map")
			}
		})
	}
}

// newSide is a new process whose registry holds live, restoring from a
// parent played by the test on parent; gone closes when the test makes
// tableflip see the parent exit.
type newSide struct {
	u        *Upgrader
	parent   handoffConn
	gone     chan struct{}
	restored chan restoreOutcome
	src      *state.Registry // the parent's
	accepts  state.Accepts   // what the new process asked for
}

type restoreOutcome struct {
	info state.Info
	err  error
}

func startNewSide(t *testing.T, opts Options, live, parentLive *liveMap) *newSide {
	t.Helper()
	parentEnd, childEnd, err := newSocketPair()
	if err != nil {
		t.Fatal(err)
	}
	n := &newSide{gone: make(chan struct{}), restored: make(chan restoreOutcome, 1)}
	ff := newChildFlip(map[string]*os.File{handoffFileName + "1": childEnd})
	ff.waitForParent = func(ctx context.Context) error {
		select {
		case <-n.gone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n.u, err = newUpgrader(ff, opts, goodEnv()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.u.Close() })
	if n.parent, err = fileConn(parentEnd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.parent.Close() })
	if err := n.u.State().Register(live.participant()); err != nil {
		t.Fatal(err)
	}
	n.src = childRegistry(t, parentLive.participant()) // the old process's sections
	n.parent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, _, err := n.parent.recv(nil); err != nil || m.Type != msgHello {
		t.Fatalf("hello: %+v, %v", m, err)
	}
	go func() {
		info, err := n.u.Restore(context.Background())
		n.restored <- restoreOutcome{info, err}
	}()
	m, _, err := n.parent.recv(nil)
	if err != nil || m.Type != msgStateRequest || m.Accepts == nil {
		t.Fatalf("state request: %+v, %v", m, err)
	}
	n.accepts = *m.Accepts
	return n
}

// sendPreCopy plays the old process's first round.
func (n *newSide) sendPreCopy(t *testing.T) {
	t.Helper()
	sections, err := n.src.PreCopySections(n.accepts)
	if err != nil || len(sections) != 1 || sections[0] != "live" {
		t.Fatalf("PreCopySections = %v, %v: the new process does not ask for live in two rounds (accepts %+v)", sections, err, n.accepts)
	}
	mine := sendSocket(t, n.parent, message{Type: msgPreState, Round: 1})
	defer mine.Close()
	if _, err := state.SendPreCopy(context.Background(), mine, n.src, n.accepts, sections); err != nil {
		t.Fatal(err)
	}
}

// sendMiddle plays the old process's middle round number round.
func (n *newSide) sendMiddle(t *testing.T, round int) {
	t.Helper()
	mine := sendSocket(t, n.parent, message{Type: msgPreState, Round: round})
	defer mine.Close()
	if _, err := state.SendPreCopyDelta(context.Background(), mine, n.src); err != nil {
		t.Fatal(err)
	}
}

// expect reads the new process's next message, which must be of type want.
func (n *newSide) expect(t *testing.T, want string) message {
	t.Helper()
	m, _, err := n.parent.recv(nil)
	if err != nil || m.Type != want {
		t.Fatalf("from the new process: %+v, %v; want %q", m, err, want)
	}
	return m
}

// sendState plays the old process's "state": the second round after a
// first, else the whole snapshot.
func (n *newSide) sendState(t *testing.T) {
	t.Helper()
	mine := sendStateSocket(t, n.parent)
	defer mine.Close()
	if _, err := state.SendFor(context.Background(), mine, n.src, n.accepts); err != nil {
		t.Fatal(err)
	}
}

func (n *newSide) outcome(t *testing.T) restoreOutcome {
	t.Helper()
	select {
	case got := <-n.restored:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("Restore did not return")
		return restoreOutcome{}
	}
}

// TestPreCopyNewSide: the new process's side. It says in its state request
// which sections it takes in rounds; restores the first round, says
// "pre-restored", restores each middle round on top, confirming each with
// its number, then the last, and says "restored". When the
// first round fails to restore it rejects it; when the old process refuses
// after it, or sends a second round that does not match, Restore fails and
// the first round is undone; when the old process dies between the rounds,
// the new one undoes the first round and starts on its own, as an orphan
// does (no state file here: no state).
func TestPreCopyNewSide(t *testing.T) {
	// The rounds: the first, none or three middle ones (each confirmed
	// with its number), the last.
	for _, middles := range []int{0, 3} {
		t.Run(fmt.Sprint("middle rounds=", middles), func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			live, old := newLiveMap(0), newLiveMap(5000)
			n := startNewSide(t, Options{}, live, old)
			n.sendPreCopy(t)
			if m := n.expect(t, msgPreRestored); m.Round != 1 {
				t.Fatalf("pre-restored of round %d, want 1", m.Round)
			}
			for round := 2; round <= 1+middles; round++ {
				old.set(fmt.Sprintf("key-%07d", round), -round)
				old.set(fmt.Sprint("new-", round), round)
				n.sendMiddle(t, round)
				if m := n.expect(t, msgPreRestored); m.Round != round {
					t.Fatalf("pre-restored of round %d, want %d", m.Round, round)
				}
			}
			old.set("key-0000007", -7)
			old.set("between", 1)
			if err := n.src.Freeze(context.Background()); err != nil {
				t.Fatal(err)
			}
			n.sendState(t)
			got := n.outcome(t)
			if got.err != nil {
				t.Fatalf("Restore: %v", got.err)
			}
			n.expect(t, msgRestored)
			if !maps.Equal(live.snapshot(), old.snapshot()) {
				t.Errorf("restored %d entries, the old process held %d", len(live.snapshot()), len(old.snapshot()))
			}
			if live.count("PreCopy.Restore") != 1 || live.count("PreCopy.RestoreDelta") != 1+middles || live.count("Reset") != 0 {
				t.Errorf("calls %v", live.calls)
			}
		})
	}
	t.Run("first round fails to restore", func(t *testing.T) {
		t.Cleanup(func() { goleak.VerifyNone(t) })
		live, old := newLiveMap(0), newLiveMap(50)
		live.failRestore = "PreCopy.Restore"
		n := startNewSide(t, Options{}, live, old)
		n.sendPreCopy(t)
		m := n.expect(t, msgRejected)
		got := n.outcome(t)
		if !errors.Is(got.err, ErrStateRejected) || !strings.Contains(m.Reason, "PreCopy.Restore fails") {
			t.Fatalf("Restore: %v, reason %q; want ErrStateRejected with the cause", got.err, m.Reason)
		}
		if live.count("Reset") != 1 {
			t.Errorf("calls %v: want the first round undone", live.calls)
		}
	})
	// After the first round: the old process refuses (its freeze
	// failed), sends a second round without the delta, or dies. After a
	// middle round (middle): one fails to restore, comes out of sequence,
	// or the old process dies after or during one.
	for _, tt := range []struct {
		name   string
		middle bool
		then   func(t *testing.T, n *newSide, live *liveMap)
		// want is what Restore says (nil: it succeeds, as an orphan).
		want     error
		wantText string
	}{
		{name: "refused after the first round", want: ErrStateRejected, wantText: "cannot freeze now",
			then: func(t *testing.T, n *newSide, live *liveMap) {
				n.parent.send(message{Type: msgRefused, Reason: "freeze: cannot freeze now"}, nil)
			}},
		{name: "second round without the delta", want: state.ErrPreCopy, wantText: "comes whole",
			then: func(t *testing.T, n *newSide, live *liveMap) {
				n.src.StopPreCopy() // the old process forgot its first round
				n.sendState(t)
				if m := n.expect(t, msgRejected); !strings.Contains(m.Reason, "comes whole") {
					t.Errorf("rejected: %q", m.Reason)
				}
			}},
		{name: "old process dies between the rounds",
			then: func(t *testing.T, n *newSide, live *liveMap) {
				n.parent.Close()
				close(n.gone)
			}},
		{name: "middle round fails to restore", middle: true, want: ErrStateRejected, wantText: "PreCopy.RestoreDelta fails",
			then: func(t *testing.T, n *newSide, live *liveMap) {
				live.mu.Lock()
				live.failRestore = "PreCopy.RestoreDelta"
				live.mu.Unlock()
				n.sendMiddle(t, 3)
				if m := n.expect(t, msgRejected); !strings.Contains(m.Reason, "PreCopy.RestoreDelta fails") {
					t.Errorf("rejected: %q", m.Reason)
				}
			}},
		{name: "a round out of sequence", middle: true, want: ErrHandshake, wantText: "round 5, want 3",
			then: func(t *testing.T, n *newSide, live *liveMap) {
				mine := sendSocket(t, n.parent, message{Type: msgPreState, Round: 5})
				mine.Close()
			}},
		{name: "old process dies after a middle round", middle: true,
			then: func(t *testing.T, n *newSide, live *liveMap) {
				n.parent.Close()
				close(n.gone)
			}},
		{name: "old process dies during a middle round", middle: true,
			then: func(t *testing.T, n *newSide, live *liveMap) {
				mine := sendSocket(t, n.parent, message{Type: msgPreState, Round: 3})
				var buf bytes.Buffer
				if _, err := n.src.WritePreCopyDelta(&buf); err != nil {
					t.Fatal(err)
				}
				mine.Write(transportHeader(2))        // the round follows on the stream
				mine.Write(buf.Bytes()[:buf.Len()/2]) // killed half-way
				mine.Close()
				n.parent.Close()
				close(n.gone)
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			live, old := newLiveMap(0), newLiveMap(50)
			if tt.middle {
				old = newLiveMap(20000)
			}
			n := startNewSide(t, Options{}, live, old)
			n.sendPreCopy(t)
			n.expect(t, msgPreRestored)
			if tt.middle {
				old.set("key-0000001", -1)
				n.sendMiddle(t, 2)
				n.expect(t, msgPreRestored)
				for i := range 10000 { // a large next round
					old.set(fmt.Sprintf("key-%07d", i), -i)
				}
			}
			tt.then(t, n, live)
			got := n.outcome(t)
			switch {
			case tt.want == nil && (got.err != nil || got.info.Bytes != 0):
				t.Fatalf("Restore: %+v, %v; want an orphan's start with no state", got.info, got.err)
			case tt.want != nil && (!errors.Is(got.err, tt.want) || !strings.Contains(got.err.Error(), tt.wantText)):
				t.Fatalf("Restore: %v; want %v saying %q", got.err, tt.want, tt.wantText)
			}
			if live.count("Reset") != 1 || len(live.snapshot()) != 0 {
				t.Errorf("calls %v, %d entries: want every round undone", live.calls, len(live.snapshot()))
			}
		})
	}
	t.Run("old process dies during the first round", func(t *testing.T) {
		t.Cleanup(func() { goleak.VerifyNone(t) })
		live, old := newLiveMap(0), newLiveMap(50000)
		n := startNewSide(t, Options{}, live, old)
		mine := sendSocket(t, n.parent, message{Type: msgPreState, Round: 1})
		var buf bytes.Buffer
		if _, err := n.src.WritePreCopy(&buf, n.accepts, []string{"live"}); err != nil {
			t.Fatal(err)
		}
		mine.Write(transportHeader(2))        // the snapshot follows on the stream
		mine.Write(buf.Bytes()[:buf.Len()/2]) // killed half-way
		mine.Close()
		n.parent.Close()
		close(n.gone)
		got := n.outcome(t)
		if got.err != nil || got.info.Bytes != 0 {
			t.Fatalf("Restore: %+v, %v; want an orphan's start with no state", got.info, got.err)
		}
		if live.count("PreCopy.Restore") != 1 || live.count("Reset") != 1 || len(live.snapshot()) != 0 {
			t.Errorf("calls %v, %d entries: want the half first round undone", live.calls, len(live.snapshot()))
		}
	})
	t.Run("old process of an older release", func(t *testing.T) {
		// It ignores pre_copy and answers with the whole state at once.
		t.Cleanup(func() { goleak.VerifyNone(t) })
		live, old := newLiveMap(0), newLiveMap(50)
		n := startNewSide(t, Options{}, live, old)
		if len(n.accepts.PreCopy) != 1 {
			t.Fatalf("the state request's accepts %+v: want live in pre_copy", n.accepts)
		}
		n.accepts.PreCopy = nil // as an older release decodes it
		n.sendState(t)
		if got := n.outcome(t); got.err != nil {
			t.Fatalf("Restore: %v", got.err)
		}
		n.expect(t, msgRestored)
		if live.count("Restore") != 1 || live.count("PreCopy.Restore") != 0 || !maps.Equal(live.snapshot(), old.snapshot()) {
			t.Errorf("calls %v", live.calls)
		}
	})
}
