package upgrader

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/batonhq/baton/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestZeroCounters: the zero Counters is ready to use, as its doc says.
func TestZeroCounters(t *testing.T) {
	var c Counters
	if got := c.Values(); len(got) != 0 {
		t.Fatalf("zero Counters holds %v", got)
	}
	c.Counter("requests").Inc()
	c.Counter("requests").Add(2)
	c.add(map[string]uint64{"requests": 1, "errors": 4})
	if got, want := c.Values(), map[string]uint64{"requests": 4, "errors": 4}; !maps.Equal(got, want) {
		t.Fatalf("values %v, want %v", got, want)
	}
}

// TestListenersMetricByNetwork: baton_listeners counts the sockets taken
// through the upgrader by network, under a label that says so.
func TestListenersMetricByNetwork(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	u, _ := newTestUpgrader(t, Options{Registerer: reg})
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:0"} { // two addresses: the same one twice is refused
		if _, err := u.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP baton_listeners Listening sockets and packet sockets taken through the upgrader, by network.
# TYPE baton_listeners gauge
baton_listeners{network="tcp"} 2
baton_listeners{network="udp"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "baton_listeners"); err != nil {
		t.Error(err)
	}
}

// TestCountersUndoneWithAFailedRestore: when a later section fails, the
// registry undoes the whole restore; the counters must be back at what this
// process counted itself, not at twice the snapshot's values.
func TestCountersUndoneWithAFailedRestore(t *testing.T) {
	failing := func(restoreErr error) state.Participant {
		return state.Participant{
			Name: "z.after", Version: 1,
			Capture: func(w io.Writer) error { _, err := w.Write([]byte("x")); return err },
			Restore: func(io.Reader) error { return restoreErr },
		}
	}
	var old Counters
	old.Counter("requests").Add(40)
	oldReg, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []state.Participant{old.participant(), failing(nil)} {
		if err := oldReg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := oldReg.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}

	var cur Counters
	cur.Counter("requests").Add(2) // counted by this process before Restore
	newReg, err := state.NewRegistry(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []state.Participant{cur.participant(), failing(errors.New("broken"))} {
		if err := newReg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := newReg.ReadSnapshot(&buf); err == nil {
		t.Fatal("restore succeeded; want the failing section's error")
	}
	if got := cur.Counter("requests").Load(); got != 2 {
		t.Errorf("requests = %d after the undone restore, want the 2 counted before it", got)
	}
}
