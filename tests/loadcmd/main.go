// Command loadcmd puts upgradertest's load on a service from wherever it runs:
// the systemd end-to-end tests run it inside the sdns guest, whose ports live
// in the guest's own network namespace.
//
//	loadcmd -url http://127.0.0.1:8080 < control
//
// It sends one GET / first, waits for its answer (which may start a
// socket-activated service), prints "running" on stdout, and then runs the
// load until its standard input reaches EOF or -max passes. It prints the
// report as one line of JSON and exits 0, whatever the clients saw: judging
// the report is the caller's business. Exit 1 means no report.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/batonhq/baton/upgrader/upgradertest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadcmd:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg upgradertest.LoadConfig
	flag.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "the service's base `URL`")
	flag.IntVar(&cfg.Clients, "clients", 32, "concurrent clients")
	flag.Float64Var(&cfg.Fresh, "fresh", 0.5, "share of clients that open a connection per request")
	flag.Float64Var(&cfg.Post, "post", 0.5, "share of requests that are POST /echo")
	flag.IntVar(&cfg.Rate, "rate", 2000, "requests per second, all clients together")
	max := flag.Duration("max", 2*time.Minute, "stop after this long even if standard input stays open")
	flag.Parse()

	// The first request is answered once the service serves, however long
	// systemd takes to start it; the load starts after it.
	first := &http.Client{Timeout: 30 * time.Second}
	resp, err := first.Get(cfg.URL + "/")
	if err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("first request: status %d", resp.StatusCode)
	}
	fmt.Println("running")

	ctx, cancel := context.WithTimeout(context.Background(), *max)
	defer cancel()
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	go func() {
		select {
		case <-stdinClosed:
			cancel()
		case <-ctx.Done():
		}
	}()
	report := upgradertest.RunLoad(ctx, cfg)
	return json.NewEncoder(os.Stdout).Encode(report)
}
