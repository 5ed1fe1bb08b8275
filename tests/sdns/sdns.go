package sdns

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed sdns.sh
var script []byte

// RequireEnv names the environment variable that turns skips into failures:
// with RequireEnv=1, Boot fails the test where it would skip it.
const RequireEnv = "BATON_SDNS_REQUIRE"

// Defaults applied to zero Options fields and to calls without a deadline.
const (
	// DefaultBootTimeout bounds the boot to is-system-running=running.
	// It takes 0.2 s on an idle machine.
	DefaultBootTimeout = 30 * time.Second
	// DefaultStopTimeout bounds the poweroff before SIGKILL.
	DefaultStopTimeout = 30 * time.Second
	// DefaultExecTimeout bounds each command run inside by the helpers.
	DefaultExecTimeout = 30 * time.Second
	// DefaultPollInterval is how often Poll checks its condition.
	DefaultPollInterval = 20 * time.Millisecond
)

// Options configure Boot. The zero value boots with journald, without
// D-Bus, at log level info.
type Options struct {
	// NoJournal skips systemd-journald (faster; Journal then fails).
	NoJournal bool
	// DBus starts dbus-daemon too (systemd-run --wait and busctl need it;
	// systemctl does not).
	DBus bool
	// RW lists extra host paths that stay writable inside, at the same
	// path. Everything else of the host is read-only there.
	RW []string
	// BootTimeout bounds the boot. Zero means DefaultBootTimeout.
	BootTimeout time.Duration
	// StopTimeout bounds the poweroff. Zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// LogLevel is systemd's log level ("debug" shows every notification).
	// Empty means info.
	LogLevel string
}

// Instance is one booted systemd. Its methods may be called until Stop,
// which t.Cleanup calls; an Instance cannot be booted again.
type Instance struct {
	dir    string
	script string
	pid    int
	opts   Options

	stopOnce sync.Once
	stopErr  error
}

// dirRE is what sdns.sh accepts as DIR.
var dirRE = regexp.MustCompile(`^/[A-Za-z0-9._/+@-]+$`)

// Boot starts a systemd in fresh namespaces and registers its Stop with
// t.Cleanup. It skips the test when the environment cannot run it (see the
// package documentation) and fails it when the boot fails.
func Boot(t testing.TB, opts Options) *Instance {
	t.Helper()
	if runtime.GOOS != "linux" {
		skip(t, "sdns: systemd needs Linux")
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = DefaultBootTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	in := newInstance(t, opts)
	stdout, stderr, err := in.start()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		os.RemoveAll(in.dir)
		skip(t, "sdns: "+strings.TrimSpace(stderr))
	}
	if err != nil {
		// start cleans up after itself on failure; stop is idempotent
		in.runScript("stop")
		os.RemoveAll(in.dir)
		t.Fatalf("sdns: start: %v\n%s", err, stderr)
	}
	in.pid, err = strconv.Atoi(strings.TrimSpace(stdout))
	if err != nil {
		in.runScript("stop")
		os.RemoveAll(in.dir)
		t.Fatalf("sdns: start printed %q, not a pid\n%s", stdout, stderr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			in.logDiagnostics(t)
		}
		if err := in.Stop(); err != nil {
			t.Errorf("sdns: %v", err)
		}
	})
	return in
}

// newInstance makes the instance directory and writes sdns.sh into it.
func newInstance(t testing.TB, opts Options) *Instance {
	t.Helper()
	// Not t.TempDir: the script accepts a narrower set of characters than
	// test names produce, and the directory must outlive the test's own
	// TempDir cleanup until Stop has run.
	dir, err := os.MkdirTemp("", "sdns-")
	if err != nil {
		t.Fatalf("sdns: %v", err)
	}
	if !dirRE.MatchString(dir) {
		os.RemoveAll(dir)
		t.Fatalf("sdns: instance directory %q has characters sdns.sh refuses; set TMPDIR to a plain path", dir)
	}
	in := &Instance{dir: dir, script: filepath.Join(dir, "sdns.sh"), opts: opts}
	if err := os.WriteFile(in.script, script, 0o755); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("sdns: %v", err)
	}
	return in
}

// start runs "sdns.sh start", bounded by the boot timeout and a margin,
// and returns what it printed: the guest's pid on stdout, or why it could
// not boot on stderr (exit status 2: the environment cannot run it).
func (in *Instance) start() (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), in.opts.BootTimeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.script, "start", in.dir)
	cmd.Env = append(os.Environ(),
		"SDNS_OWNER_PID="+strconv.Itoa(os.Getpid()),
		"SDNS_BOOT_TIMEOUT="+seconds(in.opts.BootTimeout),
		"SDNS_STOP_TIMEOUT="+seconds(in.opts.StopTimeout),
		"SDNS_JOURNAL="+boolEnv(!in.opts.NoJournal),
		"SDNS_DBUS="+boolEnv(in.opts.DBus),
		"SDNS_RW="+strings.Join(in.opts.RW, " "),
	)
	if in.opts.LogLevel != "" {
		cmd.Env = append(cmd.Env, "SDNS_LOG_LEVEL="+in.opts.LogLevel)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func skip(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, RequireEnv)
	}
	t.Skip(reason)
}

func seconds(d time.Duration) string {
	return strconv.Itoa(int((d + time.Second - 1) / time.Second))
}

func boolEnv(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Dir returns the instance directory: the same path inside and outside,
// and the only one writable from both sides.
func (in *Instance) Dir() string { return in.dir }

// PID returns the host pid of the guest's systemd.
func (in *Instance) PID() int { return in.pid }

// Stop powers the guest off (bounded; SIGKILL of its PID 1, and so of the
// whole pid namespace, as fallback), removes its cgroup and then the
// instance directory. It is idempotent and is called by t.Cleanup.
func (in *Instance) Stop() error {
	in.stopOnce.Do(func() {
		out, err := in.runScript("stop")
		if err != nil {
			in.stopErr = fmt.Errorf("stop: %w\n%s", err, out)
			return // keep the directory: it holds console.log
		}
		in.stopErr = os.RemoveAll(in.dir)
	})
	return in.stopErr
}

func (in *Instance) runScript(verb string) ([]byte, error) {
	timeout := in.opts.StopTimeout + 30*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.script, verb, in.dir)
	cmd.Env = append(os.Environ(), "SDNS_STOP_TIMEOUT="+seconds(in.opts.StopTimeout))
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// logDiagnostics puts what explains a failure into the test log: failed
// units, the end of the journal and of the console.
func (in *Instance) logDiagnostics(t testing.TB) {
	t.Helper()
	if out, err := in.Output("systemctl", "--no-pager", "list-units", "--failed"); err == nil {
		t.Logf("sdns: failed units:\n%s", out)
	}
	if !in.opts.NoJournal {
		if out, err := in.Output("journalctl", "--no-pager", "-o", "short-precise", "-n", "150"); err == nil {
			t.Logf("sdns: journal (last 150 lines):\n%s", out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(in.dir, "console.log")); err == nil {
		lines := strings.Split(string(b), "\n")
		t.Logf("sdns: console.log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// Command returns a command that runs name with args inside the guest's
// namespaces (through "sdns.sh exec": nsenter, the reduced bounding set,
// killed if the nsenter dies). Its exit status is the command's.
func (in *Instance) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, in.script, append([]string{"exec", in.dir, name}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Output runs args inside, bounded by DefaultExecTimeout, and returns the
// combined stdout and stderr, trimmed.
func (in *Instance) Output(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("sdns: Output: no command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultExecTimeout)
	defer cancel()
	out, err := in.Command(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("sdns: %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Exec runs args inside and returns the trimmed output; a failure or a
// non-zero exit fails the test with the output.
func (in *Instance) Exec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := in.Output(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// Sh runs a /bin/sh script inside; see Exec.
func (in *Instance) Sh(t testing.TB, script string) string {
	t.Helper()
	return in.Exec(t, "/bin/sh", "-c", script)
}

// WriteFile writes data to path inside the guest (for example under
// /run, which is private to it).
func (in *Instance) WriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultExecTimeout)
	defer cancel()
	cmd := in.Command(ctx, "/bin/sh", "-c", `umask 077 && cat > "$1" && chmod "$2" "$1"`, "sh", path, fmt.Sprintf("%o", perm))
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sdns: write %s: %v\n%s", path, err, out)
	}
}

// InstallUnit writes a unit file to /run/systemd/system of the guest and
// reloads systemd. Test units should say DefaultDependencies=no in [Unit]
// to start without waiting for the (empty) sysinit.target; with default
// dependencies they still work.
func (in *Instance) InstallUnit(t testing.TB, name, content string) {
	t.Helper()
	if name == "" || strings.ContainsAny(name, "/\x00") {
		t.Fatalf("sdns: bad unit name %q", name)
	}
	in.WriteFile(t, "/run/systemd/system/"+name, []byte(content), 0o644)
	in.Systemctl(t, "daemon-reload")
}

// Systemctl runs systemctl --no-pager with args inside and returns its
// output; a non-zero exit fails the test.
func (in *Instance) Systemctl(t testing.TB, args ...string) string {
	t.Helper()
	return in.Exec(t, append([]string{"systemctl", "--no-pager"}, args...)...)
}

// Start runs "systemctl start unit": for Type=notify it returns after
// READY=1 (or fails the test if the start fails).
func (in *Instance) Start(t testing.TB, unit string) { t.Helper(); in.Systemctl(t, "start", unit) }

// Reload runs "systemctl reload unit", which returns when ExecReload= has.
func (in *Instance) Reload(t testing.TB, unit string) { t.Helper(); in.Systemctl(t, "reload", unit) }

// Restart runs "systemctl restart unit".
func (in *Instance) Restart(t testing.TB, unit string) { t.Helper(); in.Systemctl(t, "restart", unit) }

// StopUnit runs "systemctl stop unit".
func (in *Instance) StopUnit(t testing.TB, unit string) { t.Helper(); in.Systemctl(t, "stop", unit) }

// Show returns unit properties (systemctl show -p …), by name. Without
// props it returns all of them.
func (in *Instance) Show(t testing.TB, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"show"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out := in.Systemctl(t, append(args, "--", unit)...)
	m := make(map[string]string)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// MainPID returns the unit's MainPID (0 when it has none).
func (in *Instance) MainPID(t testing.TB, unit string) int {
	t.Helper()
	s := in.Show(t, unit, "MainPID")["MainPID"]
	pid, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("sdns: MainPID of %s is %q", unit, s)
	}
	return pid
}

// State returns the unit's ActiveState and SubState.
func (in *Instance) State(t testing.TB, unit string) (active, sub string) {
	t.Helper()
	p := in.Show(t, unit, "ActiveState", "SubState")
	return p["ActiveState"], p["SubState"]
}

// Journal returns journalctl output (short-precise, no pager) for args,
// for example "-u", "x.service". It first waits for journald to have
// written everything it received (journalctl --sync), so messages logged
// before the call are in the result.
func (in *Instance) Journal(t testing.TB, args ...string) string {
	t.Helper()
	if in.opts.NoJournal {
		t.Fatal("sdns: Journal on an instance booted with NoJournal")
	}
	in.Exec(t, "journalctl", "--sync")
	return in.Exec(t, append([]string{"journalctl", "--no-pager", "-o", "short-precise"}, args...)...)
}

// UnitJournal is Journal(t, "-u", unit).
func (in *Instance) UnitJournal(t testing.TB, unit string) string {
	t.Helper()
	return in.Journal(t, "-u", unit)
}

// BuildGo builds the Go package pkg (a path or pattern the go command
// accepts from the test's working directory) statically into Dir()/bin/name
// and returns that path, which is valid inside the guest too. The guest has
// its own /tmp, so a binary under the host's /tmp (the test binary, a
// t.TempDir) is not visible there.
func (in *Instance) BuildGo(t testing.TB, pkg, name string) string {
	t.Helper()
	out := in.binPath(t, name)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("sdns: go tool not found: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sdns: go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Install copies the host file src to Dir()/bin/name (mode 0755) and
// returns that path, which is valid inside the guest too.
func (in *Instance) Install(t testing.TB, src, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("sdns: %v", err)
	}
	out := in.binPath(t, name)
	if err := os.WriteFile(out, b, 0o755); err != nil {
		t.Fatalf("sdns: %v", err)
	}
	return out
}

func (in *Instance) binPath(t testing.TB, name string) string {
	t.Helper()
	if name == "" || strings.ContainsAny(name, "/\x00") {
		t.Fatalf("sdns: bad binary name %q", name)
	}
	bin := filepath.Join(in.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatalf("sdns: %v", err)
	}
	return filepath.Join(bin, name)
}

// Poll calls cond every DefaultPollInterval until it returns true, and
// fails the test with what if timeout passes first. For state only systemd
// knows (a MainPID to change, a unit to fail); a test that can wait on a
// pipe, a reply or a synchronous systemctl call should.
func Poll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("sdns: %s: not within %v", what, timeout)
		}
		time.Sleep(DefaultPollInterval)
	}
}
