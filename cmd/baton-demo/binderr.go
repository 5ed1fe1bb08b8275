package main

import (
	"errors"
	"fmt"
	"syscall"
)

// bindError is a listen that failed because the address is taken. Its
// message says it once, with the flag that chose the address and what to
// do; the listener's own error, which names the address twice (tableflip
// wraps net's), stays reachable through Unwrap for errors.Is and As.
type bindError struct {
	flag, addr string
	err        error
}

func (e *bindError) Error() string {
	return fmt.Sprintf("%s is in use (%s): another process listens there; if it is a baton-demo, upgrade it "+
		"(kill -HUP its pid, or baton upgrade --socket PATH) instead of starting a second one, or choose another %s",
		e.addr, e.flag, e.flag)
}

func (e *bindError) Unwrap() error { return e.err }

// listenError explains a listen on addr, set by flag, that failed because
// the address is in use; other errors are returned as they are.
func listenError(flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return &bindError{flag: flag, addr: addr, err: err}
	}
	return err
}
