package sdns_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/sdns"
)

// reply is what notifysvc answers a connection with.
type reply struct {
	pid, gen int
	from     string
	ino      string
}

// dial connects to port inside the guest (its own network namespace).
func dial(t *testing.T, in *sdns.Instance, port int) reply {
	t.Helper()
	line := in.Exec(t, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && cat <&3", port))
	var r reply
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			r.pid, _ = strconv.Atoi(v)
		case "gen":
			r.gen, _ = strconv.Atoi(v)
		case "from":
			r.from = v
		case "ino":
			r.ino = v
		}
	}
	if r.pid == 0 {
		t.Fatalf("port %d answered %q", port, line)
	}
	return r
}

// logLines keeps systemd's and notifysvc's own lines of a journal, not the
// goroutine dump a SIGABRT (the watchdog's signal) makes a Go program print.
func logLines(journal string) string {
	var keep []string
	for _, l := range strings.Split(journal, "\n") {
		if strings.Contains(l, " systemd[1]: ") || strings.Contains(l, "]: notifysvc[") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func showInt(t *testing.T, in *sdns.Instance, unit, prop string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(in.Show(t, unit, prop)[prop], 10, 64)
	if err != nil {
		t.Fatalf("%s %s: %v", unit, prop, err)
	}
	return v
}

// TestNotifyServiceUnderSystemd runs notifysvc, which speaks to systemd only
// through package systemd, as a Type=notify unit of a real systemd 252 and
// checks what systemd makes of it: READY=1 and MainPID; the MAINPID= handover
// at reload under each NotifyAccess=, and who may send it; watchdog pings
// across the handover and the health check; how "systemctl stop" treats the
// successor; the unit files of systemd/; socket activation and the fd store.
// What it establishes is summarised in systemd/NOTES.md.
func TestNotifyServiceUnderSystemd(t *testing.T) {
	in := sdns.Boot(t, sdns.Options{})
	svc := in.BuildGo(t, "./testdata/notifysvc", "notifysvc")
	reloadWait := in.Install(t, "testdata/reload-wait.sh", "reload-wait")
	t.Logf("systemd %s booted as host pid %d", strings.Fields(in.Exec(t, "systemctl", "--version"))[1], in.PID())

	t.Run("start", func(t *testing.T) {
		in.InstallUnit(t, "start.service", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
ExecStart=%s -addr 127.0.0.1:7000
`, svc))
		in.Start(t, "start.service") // returns after READY=1
		defer in.StopUnit(t, "start.service")
		r := dial(t, in, 7000)
		if pid := in.MainPID(t, "start.service"); pid != r.pid {
			t.Errorf("MainPID %d, service pid %d", pid, r.pid)
		}
		if active, sub := in.State(t, "start.service"); active != "active" || sub != "running" {
			t.Errorf("state %s/%s, want active/running", active, sub)
		}
		want := fmt.Sprintf("gen 0 (pid %d) serving, listener from bind", r.pid)
		if got := in.Show(t, "start.service", "StatusText")["StatusText"]; got != want {
			t.Errorf("StatusText %q, want %q", got, want)
		}
	})

	// The handover: on SIGHUP the main process starts its successor, which
	// inherits the listener; then one of the two tells systemd the new
	// MAINPID=. Each process runs Watchdog.Run while it is the main one.
	handovers := []struct {
		name         string
		notifyAccess string
		sender       string // notifysvc -handover: who sends MAINPID=
		keepWPID     bool   // successor inherits WATCHDOG_PID=<old pid>
		want         string // "switch", "refused" or "watchdog kill"
		wantLog      string // in the unit's journal
	}{
		{name: "old main sends MAINPID=new, NotifyAccess=main", notifyAccess: "main", sender: "old", want: "switch"},
		{name: "old main sends MAINPID=new and READY=1, NotifyAccess=main", notifyAccess: "main", sender: "old-ready", want: "switch"},
		{name: "new process sends MAINPID=self, NotifyAccess=all", notifyAccess: "all", sender: "new", want: "switch"},
		{name: "new process sends MAINPID=self, NotifyAccess=main", notifyAccess: "main", sender: "new", want: "refused",
			wantLog: "but reception only permitted for main PID"},
		{name: "successor inherits WATCHDOG_PID of the old process", notifyAccess: "main", sender: "old", keepWPID: true,
			want: "watchdog kill", wantLog: "Watchdog timeout"},
	}
	for i, tt := range handovers {
		t.Run(tt.name, func(t *testing.T) {
			unit := fmt.Sprintf("handover%d.service", i)
			port := 7100 + i
			flags := fmt.Sprintf("-addr 127.0.0.1:%d -handover %s -watchdog", port, tt.sender)
			if tt.keepWPID {
				flags += " -keep-watchdog-pid"
			}
			in.InstallUnit(t, unit, fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
NotifyAccess=%s
WatchdogSec=2s
ExecStart=%s %s
ExecReload=%s $MAINPID %%n
`, tt.notifyAccess, svc, flags, reloadWait))
			in.Start(t, unit)
			defer in.Exec(t, "systemctl", "stop", unit)
			before := dial(t, in, port)
			if pid := in.MainPID(t, unit); pid != before.pid {
				t.Fatalf("MainPID %d, service pid %d", pid, before.pid)
			}
			watchdogAt := showInt(t, in, unit, "WatchdogTimestampMonotonic")

			// reload-wait returns once MainPID is no longer the old pid
			out, reloadErr := in.Output("systemctl", "reload", unit)
			after := in.Show(t, unit, "MainPID", "ActiveState", "SubState", "Result", "NRestarts", "StatusText")
			t.Logf("reload: err=%v %s; after: %v", reloadErr, out, after)
			newPID, _ := strconv.Atoi(after["MainPID"])

			switch tt.want {
			case "refused":
				if newPID != 0 && newPID != before.pid && after["ActiveState"] == "active" {
					t.Errorf("MAINPID= was accepted: %v", after)
				}
			case "watchdog kill":
				if newPID == 0 || newPID == before.pid {
					t.Fatalf("MainPID did not move: %v", after)
				}
				sdns.Poll(t, 15*time.Second, "systemd to kill the service that stopped pinging", func() bool {
					return in.Show(t, unit, "Result")["Result"] == "watchdog"
				})
			case "switch":
				if reloadErr != nil {
					t.Fatalf("reload: %v\n%s", reloadErr, out)
				}
				r := dial(t, in, port)
				if r.pid != newPID || r.pid == before.pid || r.gen != 1 || r.from != "upgrade" || r.ino != before.ino {
					t.Errorf("after reload: MainPID %d, reply %+v (before %+v)", newPID, r, before)
				}
				if after["ActiveState"] != "active" || after["SubState"] != "running" || after["NRestarts"] != "0" {
					t.Errorf("after reload: %v", after)
				}
				// the old process exits right after the handover, leaving
				// only the successor
				sdns.Poll(t, 5*time.Second, "only the successor left in the unit's cgroup", func() bool {
					return in.Sh(t, "cat /sys/fs/cgroup/system.slice/"+unit+"/cgroup.procs") == strconv.Itoa(newPID)
				})
				// STATUS= from the successor counts: it is the main PID
				sdns.Poll(t, 5*time.Second, "successor's STATUS= accepted", func() bool {
					return strings.HasPrefix(in.Show(t, unit, "StatusText")["StatusText"], fmt.Sprintf("gen 1 (pid %d)", newPID))
				})
				// WatchdogTimestamp moves with every accepted WATCHDOG=1;
				// a whole WatchdogSec after the last ping of the old
				// process it must still be moving, and the unit alive
				sdns.Poll(t, 10*time.Second, "successor's WATCHDOG=1 accepted", func() bool {
					return showInt(t, in, unit, "WatchdogTimestampMonotonic") > watchdogAt+2_000_000
				})
				p := in.Show(t, unit, "MainPID", "ActiveState", "NRestarts")
				if p["MainPID"] != strconv.Itoa(newPID) || p["ActiveState"] != "active" || p["NRestarts"] != "0" {
					t.Errorf("a WatchdogSec after the handover: %v", p)
				}
				// systemd warned it might "not notice when it exits" (the
				// successor was the old process's child); it does notice,
				// being PID 1, to which the successor was re-parented
				in.Sh(t, "kill -KILL "+strconv.Itoa(newPID))
				sdns.Poll(t, 5*time.Second, "systemd to notice the death of the handed-over main process", func() bool {
					return in.Show(t, unit, "Result")["Result"] == "signal"
				})
			}
			if tt.wantLog != "" {
				sdns.Poll(t, 10*time.Second, "journal line "+tt.wantLog, func() bool {
					return strings.Contains(in.UnitJournal(t, unit), tt.wantLog)
				})
			}
			t.Logf("journal of %s:\n%s", unit, logLines(in.UnitJournal(t, unit)))
		})
	}

	// How "systemctl stop" treats the successor. When systemd learns a
	// MAINPID= whose parent is not systemd (the old process is still
	// alive, as -barrier guarantees here and as it is while baton's old
	// process drains), it marks the main PID "alien" and logs "Supervising
	// process … which is not our child". At stop it then does not wait
	// for an alien main process after SIGTERM (unit_kill_context): with
	// nothing else in the cgroup it sends SIGKILL at once.
	stops := []struct {
		name     string
		flags    string
		execStop string
		alien    bool // journal: "Supervising process … which is not our child"
		wantKill bool // SIGKILL right after SIGTERM instead of a graceful exit
	}{
		{name: "successor is the old process's child: SIGTERM then SIGKILL at once",
			flags: "-barrier", alien: true, wantKill: true},
		{name: "successor re-parented to systemd before MAINPID=: graceful",
			flags: "-barrier -reparent"},
		{name: "alien successor, ExecStop= waits for it: graceful",
			flags:    "-barrier",
			execStop: "ExecStop=/bin/sh -c 'kill -TERM ${MAINPID} && while kill -0 ${MAINPID} 2>/dev/null; do sleep 0.05; done'",
			alien:    true},
	}
	for i, tt := range stops {
		t.Run("stop after handover/"+tt.name, func(t *testing.T) {
			unit := fmt.Sprintf("stop%d.service", i)
			port := 7500 + i
			in.InstallUnit(t, unit, fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
ExecStart=%s -addr 127.0.0.1:%d -handover old -drain 300ms %s
ExecReload=%s $MAINPID %%n
%s
`, svc, port, tt.flags, reloadWait, tt.execStop))
			in.Start(t, unit)
			defer in.Output("systemctl", "reset-failed", unit) // a unit that stopped cleanly is gone
			before := dial(t, in, port)
			in.Reload(t, unit)
			r := dial(t, in, port)
			if r.gen != 1 || r.pid == before.pid || r.pid != in.MainPID(t, unit) {
				t.Fatalf("handover failed: %+v -> %+v", before, r)
			}
			in.StopUnit(t, unit)
			j := in.UnitJournal(t, unit)
			t.Logf("journal of %s:\n%s", unit, logLines(j))
			if got := strings.Contains(j, "which is not our child"); got != tt.alien {
				t.Errorf("systemd called the successor alien: %v, want %v", got, tt.alien)
			}
			killed := strings.Contains(j, fmt.Sprintf("Killing process %d (notifysvc) with signal SIGKILL", r.pid))
			graceful := strings.Contains(j, fmt.Sprintf("notifysvc[%d] gen=1: drained, exiting", r.pid))
			if killed != tt.wantKill || graceful == tt.wantKill {
				t.Errorf("SIGKILLed: %v, exited gracefully: %v; want SIGKILL %v", killed, graceful, tt.wantKill)
			}
			// (Result= is no witness: when the emptied cgroup is noticed
			// before the SIGCHLD, a SIGKILLed service still ends "success")
		})
	}

	// The unit files shipped in systemd/, with notifysvc standing in for
	// baton-demo and reload-wait for "baton upgrade --wait": socket
	// activation by name, a reload handover and a graceful stop.
	t.Run("demo unit files", func(t *testing.T) {
		sock, err := os.ReadFile("../../systemd/baton-demo.socket")
		if err != nil {
			t.Fatal(err)
		}
		svcUnit, err := os.ReadFile("../../systemd/baton-demo.service")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(string(svcUnit), "\n") {
			switch {
			case strings.HasPrefix(l, "ExecStart="):
				l = "ExecStart=" + svc + " -handover old -barrier -watchdog -drain 300ms -addr 127.0.0.1:1"
			case strings.HasPrefix(l, "ExecReload="):
				l = "ExecReload=" + reloadWait + " $MAINPID %n"
			}
			lines = append(lines, l)
		}
		in.InstallUnit(t, "baton-demo.socket", string(sock))
		in.InstallUnit(t, "baton-demo.service", strings.Join(lines, "\n"))
		in.Start(t, "baton-demo.socket")
		defer in.Output("systemctl", "stop", "baton-demo.socket", "baton-demo.service")
		r := dial(t, in, 8080)
		if r.from != "systemd:http" {
			t.Fatalf("reply %+v", r)
		}
		in.Reload(t, "baton-demo.service")
		r2 := dial(t, in, 8080)
		if r2.gen != 1 || r2.ino != r.ino || r2.pid != in.MainPID(t, "baton-demo.service") {
			t.Fatalf("after reload: %+v (before %+v)", r2, r)
		}
		in.StopUnit(t, "baton-demo.service")
		j := in.UnitJournal(t, "baton-demo.service")
		t.Logf("journal:\n%s", logLines(j))
		if !strings.Contains(j, fmt.Sprintf("notifysvc[%d] gen=1: drained, exiting", r2.pid)) || strings.Contains(j, "SIGKILL") {
			t.Errorf("stop after the handover was not graceful")
		}
		if res := in.Show(t, "baton-demo.service", "Result")["Result"]; res != "success" {
			t.Errorf("Result=%s", res)
		}
	})

	t.Run("health check withholds pings", func(t *testing.T) {
		in.InstallUnit(t, "sick.service", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
WatchdogSec=1s
ExecStart=%s -addr 127.0.0.1:7200 -watchdog -sick /run/notifysvc.sick
`, svc))
		in.Start(t, "sick.service")
		defer in.Output("systemctl", "reset-failed", "sick.service")
		in.Sh(t, "touch /run/notifysvc.sick")
		defer in.Sh(t, "rm -f /run/notifysvc.sick")
		sdns.Poll(t, 10*time.Second, "systemd to stop the unhealthy service", func() bool {
			return in.Show(t, "sick.service", "Result")["Result"] == "watchdog"
		})
		if j := in.UnitJournal(t, "sick.service"); !strings.Contains(j, "Watchdog timeout") {
			t.Errorf("journal:\n%s", logLines(j))
		}
	})

	t.Run("socket activation", func(t *testing.T) {
		in.InstallUnit(t, "act.socket", `[Unit]
DefaultDependencies=no
[Socket]
ListenStream=127.0.0.1:7300
FileDescriptorName=web
`)
		in.InstallUnit(t, "act.service", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
ExecStart=%s -addr 127.0.0.1:1 -handover old
ExecReload=%s $MAINPID %%n
`, svc, reloadWait))
		in.Start(t, "act.socket")
		defer in.Exec(t, "systemctl", "stop", "act.socket", "act.service")
		r := dial(t, in, 7300) // starts the service
		if r.from != "systemd:web" || r.pid != in.MainPID(t, "act.service") {
			t.Fatalf("reply %+v, MainPID %d", r, in.MainPID(t, "act.service"))
		}
		in.Reload(t, "act.service")
		r2 := dial(t, in, 7300)
		if r2.from != "upgrade" || r2.ino != r.ino || r2.pid != in.MainPID(t, "act.service") {
			t.Errorf("after reload: %+v (before %+v)", r2, r)
		}
	})

	t.Run("fd store", func(t *testing.T) {
		in.InstallUnit(t, "store.service", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
Type=notify
FileDescriptorStoreMax=4
ExecStart=%s -addr 127.0.0.1:7400 -fdstore
`, svc))
		in.Start(t, "store.service")
		defer in.Exec(t, "systemctl", "stop", "store.service")
		r := dial(t, in, 7400)
		if r.from != "bind" || showInt(t, in, "store.service", "NFileDescriptorStore") != 1 {
			t.Fatalf("reply %+v, store %v", r, in.Show(t, "store.service", "NFileDescriptorStore"))
		}
		in.Restart(t, "store.service")
		r2 := dial(t, in, 7400)
		if r2.from != "systemd:web" || r2.ino != r.ino || r2.pid == r.pid {
			t.Errorf("after restart: %+v (before %+v)", r2, r)
		}
		in.Exec(t, "systemctl", "kill", "-s", "USR1", "store.service")
		sdns.Poll(t, 5*time.Second, "FDSTOREREMOVE=1 to empty the store", func() bool {
			return showInt(t, in, "store.service", "NFileDescriptorStore") == 0
		})
	})
}
