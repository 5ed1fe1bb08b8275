package systemd_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/batonhq/baton/systemd"
)

// A Type=notify service: take the socket systemd passed (or bind one), say
// READY=1, keep the watchdog fed while the service is healthy.
func Example() {
	lns, err := systemd.Listeners(systemd.ActivationOptions{})
	if err != nil {
		log.Fatal(err) // cmd/ code; a library would return the error
	}
	var ln net.Listener
	for _, l := range lns {
		if l.Name == "http" { // FileDescriptorName=http in the .socket unit
			ln = l.Listener
		}
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:8080"); err != nil {
			log.Fatal(err)
		}
	}

	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// (false, nil) when not run by systemd
	if _, err := n.Notify(systemd.NotifyReady, systemd.Status("serving")); err != nil {
		log.Print(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	w, err := systemd.NewWatchdog(systemd.WatchdogOptions{
		Notifier: n,
		Check: func(ctx context.Context) error {
			return nil // e.g. a round trip through the service's own queue
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx) }()

	http.Serve(ln, nil)

	n.Stopping()
	cancel()
	wg.Wait()
}

// The old main process hands the service over to its successor (pid 4242
// here) once the successor is ready, under NotifyAccess=main.
func ExampleNotifier_Barrier() {
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	successor := 4242
	if _, err := n.Notify(systemd.MainPID(successor), systemd.Status("handed over")); err != nil {
		log.Print(err) // the successor is not the main process: keep serving
		return
	}
	// wait until systemd has processed MAINPID= before draining and exiting
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Barrier(ctx); err != nil {
		log.Print(err)
	}
}

// Keep a listening socket in systemd's fd store, so that a restart (or a
// crash with Restart=) gets it back through LISTEN_FDS with its name.
func ExampleNotifier_StoreFDs() {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	n, err := systemd.NewNotifier(systemd.NotifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// needs FileDescriptorStoreMax= in the unit
	if _, err := n.StoreFDs("http", ln.(*net.TCPListener)); err != nil {
		log.Print(err)
	}
}
