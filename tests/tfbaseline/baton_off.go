//go:build !baton

package main

import (
	"errors"
	"log/slog"
)

// runBaton needs baton's upgrader, linked in only with -tags baton, so that
// the tableflip baseline's binary holds tableflip alone.
func runBaton(config, *slog.Logger) error {
	return errors.New("-server=baton needs a build with -tags baton")
}
