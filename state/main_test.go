package state

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: Send, Receive
// and the tests' own senders are all joined.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
