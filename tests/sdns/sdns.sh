#!/bin/bash
# sdns.sh - boot a real systemd (PID 1) inside private Linux namespaces, for
# integration tests, without touching the host.
#
# This is baton's copy of the recipe in shared/systemd-ns/sdns.sh, embedded
# by package sdns (tests/sdns/sdns.go) and written next to the instance at
# Boot. Every protection of the recipe is kept unchanged; see README there.
#
#   sdns.sh start  DIR        boot; host pid of systemd -> DIR/pid (also printed)
#   sdns.sh exec   DIR CMD..  run CMD inside (nsenter -m -p -n -u -i -C), exit code passed through
#   sdns.sh stop   DIR        poweroff, wait (bounded), SIGKILL fallback, clean up cgroup
#   sdns.sh status DIR        print state ("running", "degraded", ... or "stopped")
#
# Requirements: root (real root, not a user namespace), util-linux (unshare,
# nsenter, setpriv, script), a cgroup2 hierarchy (pure v2 or hybrid
# /sys/fs/cgroup/unified), /usr/lib/systemd/systemd.  Tested with systemd 252.
#
# What the guest gets (and why; see README.md):
#   * pid, mount, net, uts, ipc and cgroup namespaces; netns has only lo (up).
#   * every host mount re-bound READ-ONLY (per-mount flag, the host's mounts are
#     untouched), except DIR and $SDNS_RW paths which stay writable.
#   * fresh tmpfs on /run /tmp /var/tmp /var/lib/systemd /etc/systemd/system
#     (and /var/log/journal if it exists); DIR is re-bound at the same path.
#   * private /dev (tmpfs + null zero full random urandom tty, own devpts,
#     /dev/console = a pty whose output is logged to DIR/console.log).
#   * fresh /proc with /proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus
#     read-only (/proc/sys/net stays writable: it is per-netns).
#   * fresh read-only /sys, cgroup2 rooted at a private cgroup (CGROOT/sdns.*).
#   * bounding set without sys_module, sys_time, sys_rawio, syslog, sys_pacct,
#     mac_*, wake_alarm, block_suspend, audit_control, audit_read.
#   * systemd loads units ONLY from /etc/systemd/system (tmpfs),
#     /run/systemd/system (put your test units here) and /run/sdns/units
#     (allow-list: empty sysinit/basic/... targets, the poweroff chain and
#     journald).  No generators.  Nothing of the host's unit set can start.
#
# Environment knobs:
#   SDNS_BOOT_TIMEOUT (s, default 30)  SDNS_STOP_TIMEOUT (s, default 30)
#   SDNS_JOURNAL=0      do not start systemd-journald (default 1)
#   SDNS_DBUS=1         also start dbus-daemon (needed by systemd-run --wait,
#                       busctl, anything that talks to the system bus; systemctl
#                       and go-systemd's NewSystemdConnection use the private
#                       socket and do not need it)
#   SDNS_RW="p1 p2"     extra host paths that stay writable inside (same path)
#   SDNS_DEVICES="net/tun fuse"  extra /dev nodes to recreate inside
#   SDNS_OWNER_PID=N    start a watcher that stops the instance when N dies
#   SDNS_LOG_LEVEL      systemd log level (default info)
#   SDNS_SYSTEMD        systemd binary (default /usr/lib/systemd/systemd)
#
# Exit codes: 0 ok, 1 failure, 2 unsupported environment (tests should skip).

set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
SDNS_SYSTEMD=${SDNS_SYSTEMD:-/usr/lib/systemd/systemd}
BOOT_TIMEOUT=${SDNS_BOOT_TIMEOUT:-30}
STOP_TIMEOUT=${SDNS_STOP_TIMEOUT:-30}
DROP_CAPS=-sys_module,-sys_rawio,-sys_time,-syslog,-sys_pacct,-mac_admin,-mac_override,-wake_alarm,-block_suspend,-audit_control,-audit_read
SYSTEMD_UNIT_PATH_IN=/etc/systemd/system:/run/systemd/system:/run/sdns/units

log()  { echo "sdns: $*" >&2; }
die()  { log "error: $*"; exit 1; }
skip() { log "unsupported: $*"; exit 2; }
now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

# ---------------------------------------------------------------- helpers ---

check_dir_arg() {
	[ -n "${1:-}" ] || die "missing DIR"
	[[ $1 == /* ]] || die "DIR must be an absolute path: $1"
	[[ $1 =~ ^[A-Za-z0-9._/+@-]+$ ]] || die "DIR may only contain [A-Za-z0-9._/+@-]: $1"
}

# starttime (field 22 of /proc/PID/stat) identifies a process across pid reuse
proc_start() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	echo "${20}"
}

# prints the host pid of the instance's systemd if it is alive and ours
live_pid() {
	local dir=$1 pid st
	pid=$(cat "$dir/pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	st=$(cat "$dir/.sdns/pid.start" 2>/dev/null) || return 1
	proc_alive "$pid" "$st" || return 1
	echo "$pid"
}

# true if PID is alive (not a zombie) and has the given starttime
proc_alive() {
	local s want=$2
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	[ "$1" != Z ] && [ "$1" != X ] && [ "${20}" = "$want" ]
}

wait_gone() { # pid starttime timeout_s
	local pid=$1 st=$2 deadline=$(( $(now_ms) + $3 * 1000 ))
	while proc_alive "$pid" "$st"; do
		[ "$(now_ms)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

cgroup2_root() {
	if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
		echo /sys/fs/cgroup
	elif [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
		echo /sys/fs/cgroup/unified
	else
		return 1
	fi
}

rm_cgroup_tree() { # remove CGROOT/sdns.* bottom-up (only empty cgroups can go)
	local cg=$1 i
	case $cg in */sdns.*) ;; *) die "refusing to remove cgroup $cg" ;; esac
	for i in $(seq 1 50); do
		[ -d "$cg" ] || return 0
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[ -d "$cg" ] || return 0
		sleep 0.1
	done
	log "warning: could not remove cgroup $cg"
}

# ------------------------------------------------------------------ start ---

cmd_start() {
	local dir=$1 S cgroot cg id mon pid t0 t1 st deadline
	check_dir_arg "$dir"
	[ "$(id -u)" = 0 ] || skip "must run as root"
	# root inside a user namespace cannot create the host-side cgroup
	[ "$(awk '{print $1, $2, $3}' /proc/self/uid_map)" = "0 0 4294967295" ] ||
		skip "running inside a user namespace (need real root)"
	for c in unshare nsenter setpriv script mount; do
		command -v "$c" >/dev/null || skip "$c not found"
	done
	[ -x "$SDNS_SYSTEMD" ] || skip "$SDNS_SYSTEMD not found"
	cgroot=$(cgroup2_root) || skip "no cgroup2 hierarchy (need unified or hybrid cgroups)"
	# probe: can we create the namespaces at all (fails in unprivileged containers)
	timeout 10 unshare --pid --fork --mount --net --uts --ipc --cgroup --propagation private true \
		2>/dev/null || skip "unshare of pid/mount/net/uts/ipc/cgroup namespaces failed"

	mkdir -p "$dir"
	S=$dir/.sdns
	if live_pid "$dir" >/dev/null; then die "an instance is already running for $dir"; fi
	rm -rf "$S"
	mkdir -p "$S"
	rm -f "$dir/pid"

	id=sdns.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	cg=$cgroot/$id
	mkdir "$cg" 2>/dev/null || skip "cannot create cgroup $cg"
	echo "$cg" >"$S/cgroup"
	: >"$dir/console.log"

	t0=$(now_ms)
	# Monitor: script(1) gives the guest a pty as /dev/console and appends
	# everything written there to DIR/console.log.  unshare --kill-child
	# SIGKILLs the guest's PID 1 (and thus the whole pid namespace) if the
	# monitor dies.
	(
	# do not leak the caller's descriptors into the long-lived monitor
	for fd in /proc/$BASHPID/fd/*; do
		fd=${fd##*/}
		if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
	done
	SHELL=/bin/sh exec setsid script -qfec \
		"exec unshare --kill-child --pid --fork --mount --net --uts --ipc --propagation private -- $SELF _stage2 $dir" \
		"$dir/console.log"
	) </dev/null >/dev/null 2>"$S/monitor.err" &
	mon=$!
	echo "$mon" >"$S/monitor.pid"
	proc_start "$mon" >"$S/monitor.start" || true

	deadline=$(( t0 + 10000 ))
	until [ -s "$S/hostpid" ]; do
		if ! kill -0 "$mon" 2>/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
			log "namespace setup failed; console.log:"
			tail -n 40 "$dir/console.log" >&2 || true
			cmd_cleanup "$dir"
			exit 1
		fi
		sleep 0.01
	done
	pid=$(cat "$S/hostpid")
	proc_start "$pid" >"$S/pid.start"
	[ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] ||
		die "pid $pid is not in a new pid namespace"
	echo "$pid" >"$dir/pid"

	deadline=$(( t0 + BOOT_TIMEOUT * 1000 ))
	st=
	while :; do
		st=$(timeout 5 nsenter -t "$pid" -m -p -n -u -i -C systemctl is-system-running 2>/dev/null) || true
		case $st in running | degraded) break ;; esac
		if ! live_pid "$dir" >/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
			log "systemd did not reach running/degraded (last state: '${st:-none}'); console.log:"
			tail -n 60 "$dir/console.log" >&2 || true
			cmd_stop "$dir" >/dev/null 2>&1 || true
			exit 1
		fi
		sleep 0.02
	done
	t1=$(now_ms)
	echo $((t1 - t0)) >"$S/boot.ms"
	log "systemd pid $pid is $st after $((t1 - t0)) ms (cgroup $cg)"
	[ "$st" = running ] || timeout 10 "$SELF" exec "$dir" systemctl --no-pager --failed >&2 || true

	if [ -n "${SDNS_OWNER_PID:-}" ]; then
		setsid "$SELF" _watch "$dir" "$SDNS_OWNER_PID" </dev/null >/dev/null 2>&1 &
		echo $! >"$S/watch.pid"
	fi
	echo "$pid"
}

# Runs as PID 1 of the new pid namespace, in the new mount/net/uts/ipc
# namespaces but still in the host cgroup namespace and with the host /proc.
cmd_stage2() {
	local dir=$1 S=$1/.sdns k v rest hp=
	while read -r k v rest; do
		if [ "$k" = NSpid: ]; then hp=$v; break; fi
	done </proc/self/status
	echo "$hp" >"$S/hostpid.tmp"
	mv "$S/hostpid.tmp" "$S/hostpid"
	# move ourselves into the private cgroup, then make it our cgroupns root
	echo 0 >"$(cat "$S/cgroup")/cgroup.procs"
	exec unshare --cgroup -- "$SELF" _stage3 "$dir"
}

write_unit() { # name content
	printf '%s\n' "$2" >"/run/sdns/units/$1"
}

# Runs as PID 1 with all namespaces in place; builds the guest's mount table
# and execs systemd.
cmd_stage3() {
	local dir=$1 mp p n i
	local -a rw_paths=("$dir") rw_fds=() devs=()
	[ "${SDNS_DEBUG:-0}" = 0 ] || set -x
	# the pty from script(1) becomes /dev/console; re-open it by path so the
	# fd refers to a mount of *this* mount namespace (bind needs that)
	exec 8>&1
	p=$(readlink /proc/self/fd/8) || p=
	if [[ $p == /* ]] && [ -e "$p" ]; then exec 8<>"$p"; else exec 8<>/dev/null; fi
	# keep handles on the writable paths; they may get covered by tmpfs below
	for p in ${SDNS_RW:-}; do
		if [ -e "$p" ]; then rw_paths+=("$(readlink -f "$p")"); else echo "sdns: SDNS_RW path $p missing" >&2; fi
	done
	for p in "${rw_paths[@]}"; do exec {n}<"$p"; rw_fds+=("$n"); done
	# extra device nodes: remember type/major/minor before /dev is replaced
	for p in ${SDNS_DEVICES:-}; do
		if [ -c "/dev/$p" ]; then devs+=("$p $(stat -c '%t %T %a' "/dev/$p")"); fi
	done

	mount --make-rprivate /

	# 1. every existing mount read-only (bind remount: per-mount flag only,
	#    never the superblock; the host keeps its rw mounts)
	while read -r _ _ _ _ mp _; do
		[[ $mp != *\\* ]] || printf -v mp '%b' "$(sed 's/\\\([0-7]\{3\}\)/\\0\1/g' <<<"$mp")"
		case $mp in /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;; esac
		mount -o remount,bind,ro "$mp" || { [ "$mp" != / ] || exit 1; }
	done < <(cat /proc/self/mountinfo)

	# 2. private /dev
	mount -t tmpfs -o mode=755,nosuid,noexec,size=4m sdns-dev /dev
	mknod -m 666 /dev/null c 1 3
	mknod -m 666 /dev/zero c 1 5
	mknod -m 666 /dev/full c 1 7
	mknod -m 666 /dev/random c 1 8
	mknod -m 666 /dev/urandom c 1 9
	mknod -m 666 /dev/tty c 5 0
	for i in "${devs[@]}"; do
		# shellcheck disable=SC2086
		set -- $i
		mkdir -p "/dev/$(dirname "$1")"
		mknod -m "$4" "/dev/$1" c $((16#$2)) $((16#$3))
	done
	ln -s /proc/self/fd /dev/fd
	ln -s /proc/self/fd/0 /dev/stdin
	ln -s /proc/self/fd/1 /dev/stdout
	ln -s /proc/self/fd/2 /dev/stderr
	mkdir -m 755 /dev/pts /dev/mqueue
	mkdir -m 1777 /dev/shm
	mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec devpts /dev/pts
	ln -s pts/ptmx /dev/ptmx
	mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m tmpfs /dev/shm
	mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue
	touch /dev/console
	mount -c --bind /proc/self/fd/8 /dev/console

	# 3. private writable scratch areas
	mount -t tmpfs -o mode=755,nosuid,nodev,size=64m sdns-run /run
	mount -t tmpfs -o mode=1777,nosuid,nodev sdns-tmp /tmp
	mount -t tmpfs -o mode=1777,nosuid,nodev sdns-vartmp /var/tmp
	mount -t tmpfs -o mode=755,nosuid,nodev sdns-varlibsystemd /var/lib/systemd
	mount -t tmpfs -o mode=755,nosuid,nodev sdns-etcsystemd /etc/systemd/system
	[ ! -d /var/log/journal ] || mount -t tmpfs -o mode=2755,nosuid,nodev sdns-journal /var/log/journal

	# 4. writable paths (DIR first) re-bound at their own path
	for i in "${!rw_paths[@]}"; do
		p=${rw_paths[$i]}
		[ -e "$p" ] || mkdir -p "$p"
		mount -c --bind "/proc/self/fd/${rw_fds[$i]}" "$p"
		mount -o remount,bind,rw "$p"
		eval "exec ${rw_fds[$i]}<&-"
	done

	# 5. /proc for the new pid namespace; kernel-global knobs read-only
	mount -t proc -o nosuid,nodev,noexec proc /proc
	for p in /proc/sys /proc/sysrq-trigger /proc/irq /proc/bus; do
		[ -e "$p" ] || continue
		mount --bind "$p" "$p"
		mount -o remount,bind,ro "$p"
	done
	mount --bind /proc/sys/net /proc/sys/net # per network namespace
	mount -o remount,bind,rw /proc/sys/net

	# 6. fresh sysfs (shows only our netns devices) read-only; cgroup2 rooted
	#    at our private cgroup (cgroup namespace)
	mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
	mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup

	# 7. identity and manager configuration
	mkdir -p /run/sdns/units /run/systemd/system /run/systemd/system.conf.d
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >/run/sdns/machine-id
	echo >>/run/sdns/machine-id
	mount --bind /run/sdns/machine-id /etc/machine-id
	mount -o remount,bind,ro /etc/machine-id
	cat >/run/systemd/system.conf.d/99-sdns.conf <<-'EOF'
		[Manager]
		LogColor=no
		DefaultTimeoutStartSec=30s
		DefaultTimeoutStopSec=10s
		RuntimeWatchdogSec=off
		RebootWatchdogSec=off
		KExecWatchdogSec=off
		CtrlAltDelBurstAction=none
	EOF

	# 8. unit allow-list
	local want=
	[ "${SDNS_JOURNAL:-1}" = 0 ] || want="Wants=systemd-journald.service"
	[ "${SDNS_DBUS:-0}" = 0 ] || want="$want
Wants=dbus.socket"
	write_unit sdns.target "[Unit]
Description=sdns boot target
AllowIsolate=yes
$want"
	ln -s sdns.target /run/sdns/units/default.target
	for n in sysinit basic sockets timers paths slices local-fs remote-fs swap \
		network network-pre network-online nss-lookup time-sync cryptsetup \
		getty multi-user graphical emergency rescue; do
		write_unit "$n.target" "[Unit]
Description=sdns placeholder $n.target (intentionally empty)"
	done
	for n in poweroff.target systemd-poweroff.service reboot.target systemd-reboot.service \
		halt.target systemd-halt.service exit.target systemd-exit.service \
		shutdown.target umount.target final.target; do
		cp "/usr/lib/systemd/system/$n" /run/sdns/units/
	done
	if [ "${SDNS_JOURNAL:-1}" != 0 ]; then
		for n in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket; do
			cp "/usr/lib/systemd/system/$n" /run/sdns/units/
		done
	fi
	if [ "${SDNS_DBUS:-0}" != 0 ]; then
		cp /usr/lib/systemd/system/dbus.socket /usr/lib/systemd/system/dbus.service /run/sdns/units/
	fi

	set +x
	exec setpriv --bounding-set "$DROP_CAPS" -- \
		env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		SYSTEMD_UNIT_PATH="$SYSTEMD_UNIT_PATH_IN" \
		SYSTEMD_GENERATOR_PATH=/run/sdns/no-generators \
		SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/sdns/no-generators \
		SYSTEMD_COLORS=0 \
		"$SDNS_SYSTEMD" --system --unit=sdns.target --log-level="${SDNS_LOG_LEVEL:-info}" \
		--log-color=no --show-status=yes </dev/null >&8 2>&8
}

# ------------------------------------------------------------------- exec ---

cmd_exec() {
	local dir=$1 pid
	shift
	check_dir_arg "$dir"
	[ $# -gt 0 ] || die "usage: sdns.sh exec DIR CMD..."
	pid=$(live_pid "$dir") || die "no running instance for $dir"
	# cwd: the caller's if it exists inside, else /.  --pdeathsig: nsenter
	# forks (pid namespace) and does not forward signals; if nsenter is killed
	# (test timeout) the command inside is killed too.
	exec nsenter -t "$pid" -m -p -n -u -i -C -- \
		setpriv --pdeathsig KILL --bounding-set "$DROP_CAPS" -- \
		/bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@"
}

# ------------------------------------------------------------------- stop ---

cmd_cleanup() {
	local dir=$1 S=$1/.sdns mon mst cg w
	mon=$(cat "$S/monitor.pid" 2>/dev/null) || mon=
	mst=$(cat "$S/monitor.start" 2>/dev/null) || mst=
	if [ -n "$mon" ] && proc_alive "$mon" "$mst"; then
		wait_gone "$mon" "$mst" 5 || { kill -TERM "$mon" 2>/dev/null || true; wait_gone "$mon" "$mst" 5 || true; }
	fi
	cg=$(cat "$S/cgroup" 2>/dev/null) || cg=
	[ -z "$cg" ] || rm_cgroup_tree "$cg"
	w=$(cat "$S/watch.pid" 2>/dev/null) || w=
	if [ -n "$w" ] && [ -z "${SDNS_IN_WATCH:-}" ]; then kill -TERM "$w" 2>/dev/null || true; fi
	rm -f "$dir/pid" "$S/hostpid" "$S/watch.pid"
}

cmd_stop() {
	local dir=$1 S=$1/.sdns pid st t0 t1
	check_dir_arg "$dir"
	t0=$(now_ms)
	if pid=$(live_pid "$dir"); then
		st=$(cat "$S/pid.start")
		# SIGRTMIN+4 = "poweroff" for systemd (what machinectl poweroff sends)
		kill -s RTMIN+4 "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" "$st" "$STOP_TIMEOUT"; then
			log "systemd did not power off within ${STOP_TIMEOUT}s; SIGKILL (kills the whole pid namespace)"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" "$st" 10 || die "pid $pid survived SIGKILL"
		fi
	fi
	cmd_cleanup "$dir"
	t1=$(now_ms)
	if [ -d "$S" ]; then echo $((t1 - t0)) >"$S/stop.ms"; fi
	log "stopped in $((t1 - t0)) ms"
}

cmd_status() {
	local dir=$1 pid
	check_dir_arg "$dir"
	if pid=$(live_pid "$dir"); then
		timeout 10 nsenter -t "$pid" -m -p -n -u -i -C systemctl is-system-running || true
	else
		echo stopped
		return 3
	fi
}

cmd_watch() {
	local dir=$1 owner=$2 sp=
	trap 'kill $sp 2>/dev/null; exit 0' TERM
	while kill -0 "$owner" 2>/dev/null && [ -e "$dir/pid" ]; do
		sleep 1 &
		sp=$!
		wait $sp
	done
	if [ -e "$dir/pid" ]; then SDNS_IN_WATCH=1 "$SELF" stop "$dir"; fi
}

case ${1:-} in
start) cmd_start "${2:-}" ;;
exec) shift; cmd_exec "$@" ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status "${2:-}" ;;
_stage2) cmd_stage2 "$2" ;;
_stage3) cmd_stage3 "$2" ;;
_watch) cmd_watch "$2" "$3" ;;
*)
	sed -n '2,9p' "$SELF" >&2
	exit 1
	;;
esac
