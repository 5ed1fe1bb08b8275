package worker_test

import (
	"bytes"
	"context"
	"fmt"

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
