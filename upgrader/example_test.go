package upgrader_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batonhq/baton/upgrader"
)

// Example is the README's "Embedding it": a service takes its listener
// through the upgrader, serves HTTP on it and upgrades on SIGHUP; when a new
// process has taken over it drains and returns. It serves until then, so go
// test compiles it without running it.
func Example() {
	logger := slog.Default()
	mux := http.NewServeMux()
	ctx := context.Background()

	u, err := upgrader.New(upgrader.Options{PIDFile: "/run/app.pid", Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()

	ln, err := u.Listen("tcp", ":8080") // inherited from the old process, or new
	if err != nil {
		log.Fatal(err)
	}
	u.Serve(&http.Server{Handler: mux}, ln) // drained by the upgrader, losslessly
	if err := u.Ready(); err != nil {       // restores state, then the old process drains
		log.Fatal(err)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case <-hup:
			go func() {
				res, err := u.Upgrade(ctx) // typed errors: errors.Is(err, upgrader.ErrReadyTimeout) ...
				log.Println(res, err)
			}()
		case <-u.Exit(): // a new process took over
			u.Shutdown(ctx) // stop accepting, drain, exit
			return
		}
	}
}

// ExampleUpgrader_Upgrade tells the outcomes of an upgrade apart: success,
// an attempt that failed (an *UpgradeError says at which step, with which
// new process, and why), and a trigger refused before anything was tried.
// It starts a process, so go test compiles it without running it.
func ExampleUpgrader_Upgrade() {
	u, err := upgrader.New(upgrader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()
	if err := u.Ready(); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := u.Upgrade(ctx)
	var ue *upgrader.UpgradeError
	switch {
	case err == nil:
		fmt.Printf("pid %d serves, generation %d, ready after %v\n", res.Pid, res.Generation, res.Duration)
		u.Shutdown(ctx) // drain; then exit
	case errors.As(err, &ue):
		// The attempt failed: this process serves on with all it had.
		fmt.Printf("upgrade failed at %s (new pid %d) after %v: %v\n", ue.Step, ue.Pid, ue.Elapsed, ue.Err)
		if errors.Is(err, upgrader.ErrChildExited) {
			fmt.Println("the new process ended with", ue.ExitStatus)
		}
	default:
		// Refused, nothing tried: ErrNotReady, ErrUpgradeInProgress,
		// ErrUpgraded, ErrParentRunning or ErrClosed.
		fmt.Println("not now:", err)
	}
}

// ExampleCounters counts on a zero Counters. The Upgrader's own, from
// Upgrader.Counters, also carry their values across upgrades.
func ExampleCounters() {
	var c upgrader.Counters
	c.Counter("requests").Inc()
	c.Counter("requests").Add(2)
	fmt.Println(c.Counter("requests").Load(), c.Values())
	// Output: 3 map[requests:3]
}
