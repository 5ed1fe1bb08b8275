// Command multisvc is a service with one socket of every kind the upgrader
// hands over (TCP on IPv4 and IPv6, UDP, Unix stream and datagram) and a
// named file. Each socket answers with the pid that served it, so a test
// can check that an upgrade moves all of them to the new process.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/batonhq/baton/upgrader"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "multisvc:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".", "`directory` for the Unix sockets and the named file")
	pidfile := flag.String("pidfile", "", "pid file")
	v6 := flag.Bool("v6", true, "also listen on [::1]")
	flag.Parse()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: log})
	if err != nil {
		return err
	}
	defer u.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	fields, err := listenAll(u, *dir, *v6, answerer{wg: &wg, pid: []byte(strconv.Itoa(os.Getpid()) + "\n")})
	if err != nil {
		return err
	}
	ino, err := namedFile(u, *dir)
	if err != nil {
		return err
	}
	fields = append(fields, "file_ino", ino, "generation", u.Generation())

	if err := u.Ready(); err != nil {
		return err
	}
	log.Info("serving", fields...)
	return serveSignals(u, sigs, log)
}

// answerer answers every connection and datagram with the pid, in a
// goroutine per socket that wg counts.
type answerer struct {
	wg  *sync.WaitGroup
	pid []byte
}

func (a answerer) stream(ln net.Listener) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write(a.pid)
			c.Close()
		}
	}()
}

func (a answerer) packets(pc net.PacketConn) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(a.pid, from)
		}
	}()
}

// listenAll takes one socket of every kind through the upgrader (inherited
// after the first generation), serves each with a, and returns their
// addresses as log fields, by kind.
func listenAll(u *upgrader.Upgrader, dir string, v6 bool, a answerer) ([]any, error) {
	fields := []any{}
	streams := [][2]string{{"tcp4", "127.0.0.1:0"}, {"unix", filepath.Join(dir, "stream.sock")}}
	if v6 {
		streams = append(streams, [2]string{"tcp6", "[::1]:0"})
	}
	for _, s := range streams {
		ln, err := u.Listen(s[0], s[1])
		if err != nil {
			return nil, err
		}
		a.stream(ln)
		fields = append(fields, s[0], ln.Addr().String())
	}
	for _, s := range [][2]string{{"udp", "127.0.0.1:0"}, {"unixgram", filepath.Join(dir, "dgram.sock")}} {
		pc, err := u.ListenPacket(s[0], s[1])
		if err != nil {
			return nil, err
		}
		a.packets(pc)
		fields = append(fields, s[0], pc.LocalAddr().String())
	}
	return fields, nil
}

// namedFile returns the inode of the named file "data": created by the
// first generation, inherited after.
func namedFile(u *upgrader.Upgrader, dir string) (uint64, error) {
	f, err := u.File("data")
	if err != nil {
		return 0, err
	}
	if f == nil {
		if f, err = os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return 0, err
		}
		if err := u.AddFile("data", f); err != nil {
			return 0, err
		}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	f.Close()
	return st.Ino, nil
}

// serveSignals upgrades on SIGHUP, in the background, and shuts down on
// SIGTERM or once a new process has taken over.
func serveSignals(u *upgrader.Upgrader, sigs <-chan os.Signal, log *slog.Logger) error {
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				return u.Shutdown(context.Background())
			}
			go func() {
				res, err := u.Upgrade(context.Background())
				if err != nil {
					log.Error("upgrade failed: still serving", "err", err)
					return
				}
				log.Info("upgraded", "new_pid", res.Pid)
			}()
		case <-u.Exit():
			return u.Shutdown(context.Background())
		}
	}
}
