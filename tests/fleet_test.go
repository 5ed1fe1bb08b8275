package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
	"github.com/batonhq/baton/tests/sdns"
	"github.com/batonhq/baton/upgrader/upgradertest"
)

// The fleet test runs contrib/ansible/rolling-upgrade.yml, unchanged, with
// Debian's Ansible against three hosts, each a real systemd 252 booted by
// tests/sdns in namespaces of its own and running baton-demo from the
// shipped units under load. Ansible reaches each host over SSH: the host's
// systemd listens on a Unix socket in its instance directory (sshd.socket,
// Accept=yes) and starts a real sshd for each connection, which runs the
// modules inside that host's namespaces; the inventory's ProxyCommand is
// "nc -U <that socket>", the way a bastion would be named. Nothing enters
// the namespaces but the SSH connection, and the play is the one users run.
// On the machine itself Ansible keeps its files in the test's directory
// (ANSIBLE_HOME, the SSH control sockets); the one file it writes outside
// is libuuid's clock (/var/lib/libuuid/clock.txt, from Python's uuid1),
// which tests/sdns/hostcheck.sh lists as a system file changed.

// fleetPort is the port baton-demo.socket listens on in every host's own
// network namespace.
const fleetPort = 8080

// fleetHost is one host of the fleet.
type fleetHost struct {
	name string
	*sdEnv
	sshSock string // the Unix socket the host's sshd.socket listens on
}

// fleetStatus is what baton status --json says of the serving process.
type fleetStatus struct {
	Pid        int `json:"pid"`
	Generation int `json:"generation"`
	Build      struct {
		User string `json:"user"` // the release, main.version
	} `json:"build"`
}

// needTool finds a tool the test cannot run without: a skip where it is not
// installed, a failure where CI (BATON_SDNS_REQUIRE=1) should have installed it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not installed (Debian package %s; .ci/run installs it)", name, pkg)
		if os.Getenv(sdns.RequireEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// sshKeys makes the key the controller logs in with and returns its path.
func sshKeys(t *testing.T, dir string) string {
	t.Helper()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// startSSHD gives the host an sshd reached through a Unix socket in its
// instance directory, with a host key of its own and clientKey's public
// half as root's only authorized key, and returns the known_hosts line
// for it.
func (h *fleetHost) startSSHD(t *testing.T, clientKey string) string {
	t.Helper()
	dir := filepath.Join(h.in.Dir(), "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// StrictModes no: the files are root's, 0600, but the instance
	// directory sits under /tmp, which sshd would refuse as a parent.
	config := fmt.Sprintf(`HostKey %[1]s/host_ed25519
AuthorizedKeysFile %[1]s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp /usr/lib/openssh/sftp-server
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	h.sshSock = filepath.Join(h.in.Dir(), "ssh.sock")
	h.in.InstallUnit(t, "sshd.socket", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Socket]
ListenStream=%s
SocketMode=0600
Accept=yes
`, h.sshSock))
	// One sshd per connection (inetd mode); /run/sshd is its
	// privilege-separation directory, shared by the instances.
	h.in.InstallUnit(t, "sshd@.service", fmt.Sprintf(`[Unit]
DefaultDependencies=no
[Service]
ExecStart=-/usr/sbin/sshd -i -f %s/sshd_config
StandardInput=socket
StandardError=journal
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes
`, dir))
	h.in.Start(t, "sshd.socket")
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(hostPub))
	return h.name + " " + f[0] + " " + f[1] + "\n"
}

// startService runs baton-demo from the shipped units, with extra
// [Service] settings in a drop-in.
func (h *fleetHost) startService(t *testing.T, dropIn string) {
	t.Helper()
	h.in.InstallUnit(t, "baton-demo.socket", h.shippedUnit(t, "baton-demo.socket"))
	h.in.InstallUnit(t, "baton-demo.service", h.shippedUnit(t, "baton-demo.service"))
	if dropIn != "" {
		h.in.Sh(t, "mkdir -p /run/systemd/system/baton-demo.service.d")
		h.in.WriteFile(t, "/run/systemd/system/baton-demo.service.d/test.conf", []byte("[Service]\n"+dropIn+"\n"), 0o644)
		h.in.Systemctl(t, "daemon-reload")
	}
	h.in.Start(t, "baton-demo.socket")
	h.in.Start(t, "baton-demo.service")
}

// status is baton status --json on the host.
func (h *fleetHost) status(t *testing.T) fleetStatus {
	t.Helper()
	out := h.in.Exec(t, h.cli, "status", "--json", "--socket", "/run/baton-demo/control.sock")
	var s fleetStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%s: baton status: %q: %v", h.name, out, err)
	}
	return s
}

// binaryIs reports whether the host's service binary is the file want.
func (h *fleetHost) binaryIs(t *testing.T, want string) bool {
	t.Helper()
	return fileSum(t, h.bin) == fileSum(t, want)
}

// backups lists what copy's backup left beside the binary.
func (h *fleetHost) backups(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(h.bin + ".*~")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// ansibleRun is what one ansible-playbook run printed and returned.
type ansibleRun struct {
	exit  int
	out   string // the json callback's report
	stats map[string]map[string]int
}

// fleet is the controller's side: the inventory and the environment the
// playbook runs with.
type fleet struct {
	hosts     []*fleetHost
	dir       string
	inventory string
	playbook  string
	env       []string
}

// newFleet boots n hosts, each serving release v1 of baton-demo under
// systemd; faults[i] is the drop-in of host i+1 (empty: none).
func newFleet(t *testing.T, faults []string) *fleet {
	t.Helper()
	needTool(t, "ansible-playbook", "ansible")
	needTool(t, "nc", "netcat-openbsd")
	needTool(t, "/usr/sbin/sshd", "openssh-server") // the path the hosts' unit runs
	f := &fleet{dir: t.TempDir(), playbook: filepath.Join(demotest.Root(), "contrib", "ansible", "rolling-upgrade.yml")}
	key := sshKeys(t, f.dir)
	var knownHosts strings.Builder
	hosts := map[string]any{}
	for i, fault := range faults {
		h := &fleetHost{name: fmt.Sprintf("host%d", i+1), sdEnv: bootSystemd(t)}
		knownHosts.WriteString(h.startSSHD(t, key))
		h.startService(t, fault)
		f.hosts = append(f.hosts, h)
		hosts[h.name] = map[string]any{
			"ansible_ssh_common_args": fmt.Sprintf(`-o ProxyCommand="nc -U %s"`, h.sshSock),
			"baton_service_bin":       h.bin,
			"baton_cli":               h.cli,
		}
	}
	known := filepath.Join(f.dir, "known_hosts")
	if err := os.WriteFile(known, []byte(knownHosts.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// JSON is YAML: Ansible's yaml inventory plugin reads it.
	inv, err := json.MarshalIndent(map[string]any{"baton": map[string]any{
		"hosts": hosts,
		"vars": map[string]any{
			"ansible_user":                 "root",
			"ansible_ssh_private_key_file": key,
			"ansible_python_interpreter":   "/usr/bin/python3",
			// root's home is read-only on the hosts; their /tmp is theirs
			"ansible_remote_tmp": "/tmp/.ansible",
		},
	}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	f.inventory = filepath.Join(f.dir, "inventory.yml")
	if err := os.WriteFile(f.inventory, inv, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(f.dir, "cp")
	f.env = append(os.Environ(),
		// everything Ansible keeps stays in the test's directory
		"ANSIBLE_HOME="+filepath.Join(f.dir, "ansible"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(f.dir, "ansible", "tmp"),
		"ANSIBLE_SSH_CONTROL_PATH_DIR="+cp,
		"ANSIBLE_SSH_ARGS=-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile="+known+" -o StrictHostKeyChecking=yes -o BatchMode=yes",
		"ANSIBLE_HOST_KEY_CHECKING=True",
		"ANSIBLE_PIPELINING=True",
		"ANSIBLE_RETRY_FILES_ENABLED=False",
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json",
	)
	// The SSH masters outlive a run by ControlPersist; end them before the
	// hosts stop (cleanups run last registered, first run).
	t.Cleanup(func() {
		socks, _ := filepath.Glob(filepath.Join(cp, "*"))
		for _, s := range socks {
			exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "fleet").Run()
		}
	})
	return f
}

// roll runs the playbook with release bin, which reports version.
func (f *fleet) roll(t *testing.T, bin, version string) ansibleRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible-playbook", "-i", f.inventory, f.playbook,
		"-e", "baton_release_src="+bin, "-e", "baton_release_version="+version)
	cmd.Env = f.env
	cmd.Dir = f.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := ansibleRun{out: stdout.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ansible-playbook: %v\n%s", err, stderr.String())
	}
	var report struct {
		Stats map[string]map[string]int `json:"stats"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("ansible-playbook (exit %d) printed no json report: %v\n%s\n%s", r.exit, err, stdout.String(), stderr.String())
	}
	r.stats = report.Stats
	t.Logf("ansible-playbook %s (%s): exit %d in %v, stats %v", filepath.Base(bin), version, r.exit, time.Since(start).Round(time.Millisecond), r.stats)
	return r
}

// TestAnsibleRollingUpgrade rolls releases over a fleet of three systemd
// hosts under load with contrib/ansible/rolling-upgrade.yml: v1 to v2 on
// every host; then v3, which host2 cannot take (it rejects host2's state:
// fault injection, BATON_FAULT=new-reject@2.1 in host2's unit), so the roll
// stops there: host1 serves v3, host2 serves v2 in the same process, with
// v2 back on its disk, host3 was not touched. Running the play again
// resumes the roll (host2's second attempt has no fault): host1 is skipped,
// host2 and host3 move to v3. Every host answers every request of its load
// throughout.
func TestAnsibleRollingUpgrade(t *testing.T) {
	dir := t.TempDir()
	v3 := filepath.Join(dir, "baton-demo-v3")
	// v3 reads v2's state (kv schema 2) and has the fault steps compiled in
	if err := demotest.Build("./cmd/baton-demo", v3, demotest.BuildOpts{Version: "v3", KVSchema: "2", Tags: "batonfault"}); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, []string{"", "Environment=" + upgradertest.Fault(upgradertest.FaultNewReject, 2, 1), ""})
	loads := make([]*guestLoad, len(f.hosts))
	for i, h := range f.hosts {
		if s := h.status(t); s.Build.User != "v1" || s.Generation != 0 {
			t.Fatalf("%s before the rolls: %+v", h.name, s)
		}
		// 200 requests/s per host, half on fresh connections: three hosts
		// and Ansible share the 2 cores
		loads[i] = h.startLoad(t, fleetPort, "-rate", "200", "-clients", "8")
	}

	t.Run("v2 everywhere", func(t *testing.T) {
		r := f.roll(t, f.hosts[0].v2, "v2")
		if r.exit != 0 {
			t.Fatalf("the roll failed: exit %d\n%s", r.exit, r.out)
		}
		for _, h := range f.hosts {
			s, u := h.status(t), h.state(t, "baton-demo.service")
			if s.Build.User != "v2" || s.Generation != 1 || u.MainPID != s.Pid || !u.running() || u.NRestarts != "0" {
				t.Errorf("%s after the roll: %+v, unit %+v", h.name, s, u)
			}
			if !h.binaryIs(t, h.v2) {
				t.Errorf("%s: the binary on disk is not v2", h.name)
			}
			if b := h.backups(t); len(b) != 0 {
				t.Errorf("%s: backups left: %v", h.name, b)
			}
			if got := h.root(t, fleetPort); got.Version != "v2" || got.Pid != s.Pid {
				t.Errorf("%s: GET / %+v, want v2 from pid %d", h.name, got, s.Pid)
			}
		}
	})
	if t.Failed() {
		return
	}

	before := make([]fleetStatus, len(f.hosts))
	for i, h := range f.hosts {
		before[i] = h.status(t)
	}
	t.Run("v3 stops at host2", func(t *testing.T) {
		r := f.roll(t, v3, "v3")
		if r.exit == 0 {
			t.Fatalf("the roll succeeded although host2 cannot take v3:\n%s", r.out)
		}
		if st := r.stats["host2"]; st["failures"] != 1 || st["rescued"] != 1 {
			t.Errorf("host2's stats %v, want one failure, rescued", st)
		}
		if _, ok := r.stats["host3"]; ok {
			t.Errorf("the play reached host3: %v", r.stats)
		}
		if !strings.Contains(r.out, "the upgrade to v3 failed on host2") || !strings.Contains(r.out, "rejected by fault injection") {
			t.Errorf("the play does not say why it stopped:\n%s", r.out)
		}
		h1, h2, h3 := f.hosts[0], f.hosts[1], f.hosts[2]
		if s := h1.status(t); s.Build.User != "v3" || s.Generation != 2 || s.Pid == before[0].Pid {
			t.Errorf("host1: %+v, want v3 in a new process, generation 2", s)
		}
		if !h1.binaryIs(t, v3) {
			t.Errorf("host1: the binary on disk is not v3")
		}
		// host2: the old process serves on, v2 is back on disk for the next start
		if s := h2.status(t); s != before[1] {
			t.Errorf("host2: %+v, want the process that served before, %+v", s, before[1])
		}
		if u := h2.state(t, "baton-demo.service"); !u.running() || u.MainPID != before[1].Pid || !strings.HasPrefix(u.StatusText, "upgrade failed: ") {
			t.Errorf("host2's unit: %+v", u)
		}
		if !h2.binaryIs(t, h2.v2) {
			t.Errorf("host2: the binary on disk is not v2 again")
		}
		if b := h2.backups(t); len(b) != 0 {
			t.Errorf("host2: backups left: %v", b)
		}
		if got := h2.root(t, fleetPort); got.Version != "v2" || got.Pid != before[1].Pid {
			t.Errorf("host2: GET / %+v", got)
		}
		// host3: untouched
		if s := h3.status(t); s != before[2] || !h3.binaryIs(t, h3.v2) {
			t.Errorf("host3: %+v, want %+v untouched", s, before[2])
		}
	})
	if t.Failed() {
		return
	}

	t.Run("the roll resumes", func(t *testing.T) {
		r := f.roll(t, v3, "v3")
		if r.exit != 0 {
			t.Fatalf("the roll failed: exit %d\n%s", r.exit, r.out)
		}
		if st := r.stats["host1"]; st["changed"] != 0 {
			t.Errorf("host1 already served v3, yet the play changed it: %v", st)
		}
		for _, h := range f.hosts {
			// host2's failed attempt made no generation
			if s := h.status(t); s.Build.User != "v3" || s.Generation != 2 || !h.binaryIs(t, v3) {
				t.Errorf("%s: %+v, want v3 at generation 2", h.name, s)
			}
			if b := h.backups(t); len(b) != 0 {
				t.Errorf("%s: backups left: %v", h.name, b)
			}
		}
	})

	for i, h := range f.hosts {
		t.Logf("%s:", h.name)
		assertNoFailures(t, loads[i].stop(t))
	}
}
