package sdupgrade_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"sync"

	"github.com/batonhq/baton/systemd"
	"github.com/batonhq/baton/systemd/sdupgrade"
	"github.com/batonhq/baton/upgrader"
)

// A service built on package upgrader under systemd: Attach before the first
// Listen, so that Listen takes the activated socket; the watchdog runs while
// this process is the unit's main one. Run outside systemd, as here, the same
// code only adopts activated sockets (there are none) and sends nothing.
func ExampleAttach() {
	u, err := upgrader.New(upgrader.Options{})
	if err != nil {
		log.Fatal(err) // cmd/ code; a library would return the error
	}
	defer u.Close()
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// before any upgrade: it removes WATCHDOG_PID for the next generation
	w, err := systemd.NewWatchdog(systemd.WatchdogOptions{Notifier: n})
	if err != nil {
		log.Fatal(err)
	}
	sd, err := sdupgrade.Attach(u, sdupgrade.AttachOptions{Notifier: n})
	if err != nil {
		log.Fatal(err) // a malformed LISTEN_* environment
	}
	defer sd.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sd.RunWatchdog(ctx, w) }()
	defer func() { cancel(); wg.Wait() }()

	// The activated socket bound to this address if there is one, else a
	// new one; u.Listen("tcp", "http") would take it by its
	// FileDescriptorName=http instead. A service names its port.
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	u.Serve(&http.Server{}, ln)
	if err := u.Ready(); err != nil { // READY=1 under systemd
		log.Fatal(err)
	}
	<-sd.Main()
	fmt.Println("main process; under systemd:", sd.Enabled())

	// A service now waits for <-u.Exit() (SIGHUP → u.Upgrade, wired by the
	// command) and then stops: STOPPING=1 under systemd.
	if err := u.Shutdown(context.Background()); err != nil {
		log.Print(err)
	}
	// Output: main process; under systemd: false
}
