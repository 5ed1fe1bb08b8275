package upgrader

import (
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestCloseJoinsControlUpgrade: an upgrade triggered on the control socket
// without --wait carries on after the reply. Close stops it, and returns
// only once it has ended: no goroutine outlives Close, and the upgrade's
// last step has been reported by then.
func TestCloseJoinsControlUpgrade(t *testing.T) {
	defer goleak.VerifyNone(t)
	ff := newFakeFlip()
	stopping, letGo := make(chan struct{}), make(chan struct{})
	// tableflip's Stop kills the new process and waits for it: the
	// upgrade ends a moment after Stop, when the test lets it.
	ff.stopInterruptsUpgrade(func() {
		close(stopping)
		<-letGo
	})
	sock := filepath.Join(t.TempDir(), "control.sock")
	u, err := newUpgrader(ff, Options{ControlSocket: sock}, "")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		steps []Step
	)
	u.OnEvent(func(e Event) {
		mu.Lock()
		steps = append(steps, e.Step)
		mu.Unlock()
	})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, `{"v":1,"cmd":"upgrade"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	var r ControlReply
	if err := json.NewDecoder(c).Decode(&r); err != nil || r.Type != ReplyResult {
		t.Fatalf("reply %+v, %v; want %q", r, err, ReplyResult)
	}
	<-ff.started // the upgrade is under way

	closed := make(chan error, 1)
	go func() { closed <- u.Close() }()
	<-stopping
	// Nothing can be observed not to happen without waiting: 200 ms in
	// which the stopped upgrade is still running and Close must not return.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the upgrade it stopped was still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(letGo)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []Step{StepReady, StepStarted, StepFailed}; !slices.Equal(steps, want) {
		t.Fatalf("steps when Close returned: %v, want %v", steps, want)
	}
}
