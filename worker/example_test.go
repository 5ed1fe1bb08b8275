package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton/worker"
)

// An indexer loop moves from one supervisor to the next, as it would from
// the old process to the new one, and resumes at its saved cursor.
func Example_upgrade() {
	ctx := context.Background()
	saved := make(chan struct{})
	indexer := func(start func(cursor int) (stop bool)) worker.Task {
		return worker.Loop("indexer", func(ctx context.Context, p *worker.Progress[int]) error {
			cursor := p.Value()
			if start(cursor) {
				return nil // done for good
			}
			for cursor < 3 {
				cursor++ // index one more item
				if err := p.Save(cursor); err != nil {
					return err
				}
			}
			close(saved)
			<-ctx.Done() // until the upgrade freezes the supervisor
			return nil
		})
	}

	// The old process runs the indexer until it saved cursor 3.
	old, _ := worker.New(worker.Options{})
	_ = old.Add(indexer(func(int) bool { return false }))
	oldDone := make(chan error)
	go func() { oldDone <- old.Run(ctx) }()
	<-saved
	_ = old.Freeze(ctx) // cancels the loop's context; it returns at once
	var snapshot bytes.Buffer
	_ = old.Capture(&snapshot)
	_ = old.Shutdown(ctx)
	<-oldDone

	// The new process registers the same task, restores, runs.
	resumed := make(chan int, 1)
	next, _ := worker.New(worker.Options{})
	_ = next.Add(indexer(func(cursor int) bool { resumed <- cursor; return true }))
	if err := next.Restore(&snapshot); err != nil {
		fmt.Println(err)
		return
	}
	nextDone := make(chan error)
	go func() { nextDone <- next.Run(ctx) }()
	fmt.Println("resumed at", <-resumed)
	_ = next.Shutdown(ctx)
	<-nextDone
	// Output: resumed at 3
}

// Tasks created at run time for customers are data of a kind: the next
// process registers the kind only, and gets every task back from the
// snapshot, with its schedule and progress.
func Example_kinds() {
	ctx := context.Background()
	ran := make(chan struct{}, 1)
	report := worker.Kind{Name: "report", Version: 1, Run: func(_ context.Context, r *worker.Run) error {
		fmt.Printf("run %d of %s for %s\n", r.Seq(), r.ID(), r.Args())
		ran <- struct{}{}
		return r.Checkpoint([]byte("sent"))
	}}

	old, _ := worker.New(worker.Options{})
	_ = old.RegisterKind(report)
	// An API call creates a task: no Run, its kind's.
	_ = old.Add(worker.Task{ID: "cust-1", Kind: "report", Cron: "0 9 * * mon-fri", TimeZone: "Europe/Paris", Args: []byte("acme")})
	_ = old.Add(worker.Task{ID: "cust-2", Kind: "report", At: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Args: []byte("globex")})
	var snapshot bytes.Buffer
	_ = old.Freeze(ctx)
	_ = old.Capture(&snapshot)
	_ = old.Shutdown(ctx)

	next, _ := worker.New(worker.Options{})
	_ = next.RegisterKind(report) // the kind, not the tasks
	if err := next.Restore(&snapshot); err != nil {
		fmt.Println(err)
		return
	}
	for _, ti := range next.List("", 10) {
		fmt.Println(ti.ID, ti.Schedule)
	}
	done := make(chan error)
	go func() { done <- next.Run(ctx) }()
	<-ran                  // the one-off, due since January
	_ = next.Shutdown(ctx) // waits for the run to finish
	<-done
	_, ok := next.Task("cust-2")
	fmt.Println("one-off still there:", ok)
	// Output:
	// cust-1 cron 0 9 * * mon-fri Europe/Paris
	// cust-2 at 2026-01-01T00:00:00Z
	// run 1 of cust-2 for globex
	// one-off still there: false
}
