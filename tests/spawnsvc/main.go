// Command spawnsvc is a service built on the upgrader that starts
// subprocesses, as a real service does (a helper, a hook, another baton
// program). At each step of its start it runs `env` and `ls -l
// /proc/self/fd` and logs what of its own leaked into them: the
// tableflip and baton environment variables, and any descriptor other
// than stdin, stdout, stderr and ls's own directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/batonhq/baton/upgrader"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "spawnsvc:", err)
		os.Exit(1)
	}
}

// leaks runs the subprocesses and returns what leaked into them.
func leaks() (env []string, fds []string, err error) {
	out, err := exec.Command("env").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("env: %w", err)
	}
	for _, kv := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(kv, "TABLEFLIP_") || strings.HasPrefix(kv, "BATON_HANDOFF=") {
			env = append(env, kv)
		}
	}
	out, err = exec.Command("ls", "-l", "/proc/self/fd").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("ls: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "lr-x------ 1 root root 64 Dec  3 06:50 3 -> /proc/4242/fd"
		name, target, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		f := strings.Fields(name)
		fd := f[len(f)-1]
		if fd == "0" || fd == "1" || fd == "2" {
			continue
		}
		if strings.HasPrefix(target, "/proc/") && strings.HasSuffix(target, "/fd") {
			continue // the directory ls is listing
		}
		fds = append(fds, fd+"->"+target)
	}
	return env, fds, nil
}

func logLeaks(log *slog.Logger, step string) error {
	env, fds, err := leaks()
	if err != nil {
		return err
	}
	log.Info("spawned", "step", step, "env", strings.Join(env, ","), "fds", strings.Join(fds, ","))
	return nil
}

func run() error {
	pidfile := flag.String("pidfile", "", "pid file")
	flag.Parse()
	hups := make(chan os.Signal, 2)
	signal.Notify(hups, syscall.SIGHUP)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()
	log = log.With("generation", u.Generation())
	if err := logLeaks(log, "new"); err != nil {
		return err
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	u.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, os.Getpid())
	})}, ln)
	if err := u.Ready(); err != nil {
		return err
	}
	if err := logLeaks(log, "ready"); err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().(*net.TCPAddr).String())
	// Each SIGHUP upgrades; the test ends every generation by SIGKILL.
	go func() {
		for range hups {
			if res, err := u.Upgrade(context.Background()); err != nil {
				log.Error("upgrade failed: still serving", "err", err)
			} else {
				log.Info("upgraded", "new_pid", res.Pid)
			}
		}
	}()
	<-u.Exit()
	return u.Shutdown(context.Background())
}
