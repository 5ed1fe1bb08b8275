package upgrader

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"

	"github.com/cloudflare/tableflip"
)

// fakeFlip is the one stand-in for tableflip in the unit tests. By default
// it is a process without a parent: it inherits nothing, creates real
// listeners, and its Upgrade says it started (on started) and returns what
// the test sends on result. A test changes one behaviour by setting the
// func field for it; nil keeps the default.
type fakeFlip struct {
	result  chan error
	started chan struct{}

	hasParent     func() bool
	file          func(name string) (*os.File, error)
	upgrade       func() error
	stop          func()
	waitForParent func(ctx context.Context) error
}

func newFakeFlip() *fakeFlip {
	return &fakeFlip{result: make(chan error), started: make(chan struct{}, 10)}
}

// newChildFlip returns a fake for a process started by an upgrade: it has a
// parent, which stays alive until the Upgrader stops watching, and hands out
// each file in files once, by name, deleting it from the map.
func newChildFlip(files map[string]*os.File) *fakeFlip {
	f := newFakeFlip()
	f.hasParent = func() bool { return true }
	f.file = func(name string) (*os.File, error) {
		file := files[name]
		delete(files, name)
		return file, nil
	}
	f.waitForParent = func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	return f
}

// stopInterruptsUpgrade makes Stop end an Upgrade in progress, as
// tableflip's does: it kills the new process, and Upgrade fails with
// "terminating" once after has returned (nil: at once).
func (f *fakeFlip) stopInterruptsUpgrade(after func()) {
	stopped := make(chan struct{})
	var once sync.Once
	f.stop = func() { once.Do(func() { close(stopped) }) }
	f.upgrade = func() error {
		f.started <- struct{}{}
		select {
		case err := <-f.result:
			return err
		case <-stopped:
			if after != nil {
				after()
			}
			return errors.New("terminating")
		}
	}
}

func (f *fakeFlip) Listener(network, addr string) (net.Listener, error)           { return nil, nil }
func (f *fakeFlip) PacketConn(network, addr string) (net.PacketConn, error)       { return nil, nil }
func (f *fakeFlip) AddFile(name string, file *os.File) error                      { return nil }
func (f *fakeFlip) AddListener(network, addr string, ln tableflip.Listener) error { return nil }
func (f *fakeFlip) AddPacketConn(network, addr string, pc tableflip.PacketConn) error {
	return nil
}
func (f *fakeFlip) Ready() error { return nil }

func (f *fakeFlip) File(name string) (*os.File, error) {
	if f.file != nil {
		return f.file(name)
	}
	return nil, nil
}

func (f *fakeFlip) HasParent() bool { return f.hasParent != nil && f.hasParent() }

func (f *fakeFlip) WaitForParent(ctx context.Context) error {
	if f.waitForParent != nil {
		return f.waitForParent(ctx)
	}
	return nil
}

func (f *fakeFlip) Stop() {
	if f.stop != nil {
		f.stop()
	}
}

func (f *fakeFlip) Upgrade() error {
	if f.upgrade != nil {
		return f.upgrade()
	}
	f.started <- struct{}{}
	return <-f.result
}
