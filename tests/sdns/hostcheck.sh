#!/bin/bash
# hostcheck.sh - run a command (typically the sdns end-to-end tests) between
# two snapshots of the host and fail if the run changed the host: the checks
# of shared/systemd-ns/prove.sh, applied to whatever the command boots.
#
#   tests/sdns/hostcheck.sh go test -count=1 ./tests/sdns/
#
# Root only. Exit status: the command's if the host is unchanged, else 1.
# On a machine shared with other work, changes that cannot come from sdns
# (another user's files in /tmp, other processes) are listed as "other" and
# do not fail the check; everything sdns could touch does.
set -u
W=$(mktemp -d /tmp/sdns-hostcheck.XXXXXX)
trap 'rm -rf "$W" /tmp/sdns-marker.$$ /var/tmp/sdns-marker.$$' EXIT
FAILS=0
pass() { echo "hostcheck: PASS: $*"; }
fail() { echo "hostcheck: FAIL: $*"; FAILS=$((FAILS + 1)); }

# counters the kernel changes by itself
VOLATILE='^(fs\.dentry-state|fs\.inode-nr|fs\.inode-state|fs\.file-nr|kernel\.ns_last_pid|kernel\.random\.(uuid|entropy_avail|boot_id)|kernel\.pty\.nr|fs\.aio-nr|kernel\.sched_domain|net\.netfilter\.nf_conntrack_count|fs\.quota|kernel\.perf_event_max_sample_rate|kernel\.tainted) '
# what sdns starts, directly or inside the guest
SDNS_PROCS=' (systemd|systemd-journal|systemd-journald|script|unshare|nsenter|setpriv|sdns.sh|notifysvc|reload-wait|dbus-daemon)$'

snapshot() { # name
	local s=$W/snap.$1
	mkdir -p "$s"
	sysctl -a 2>/dev/null | sort >"$s/sysctl"
	ss -ltn | awk 'NR>1 {print $4}' | sort >"$s/ss-tcp"
	ss -lun | awk 'NR>1 {print $4}' | sort >"$s/ss-udp"
	ps -e -o pid=,ppid=,stat=,comm= | awk '$2 != 2 && $1 != 2' | sort -n >"$s/ps"
	awk '{print $5, $6}' /proc/self/mountinfo | sort >"$s/mounts"
	ip -o link | sed 's/^[0-9]*: //' | sort >"$s/links"
	ip -o addr | awk '{print $2, $3, $4}' | sort >"$s/addrs"
	hostname >"$s/hostname"
	ls -A /tmp | sort >"$s/tmp-ls"
	ls -A /var/tmp | sort >"$s/vartmp-ls"
	ls -d /sys/fs/cgroup/unified/*/ /sys/fs/cgroup/*/ 2>/dev/null | sort >"$s/cgroups"
	findmnt -n -o OPTIONS / >"$s/root-opts"
}

[ "$(id -u)" = 0 ] || { echo "hostcheck: needs root" >&2; exit 2; }
[ $# -gt 0 ] || { sed -n '2,10p' "$0" >&2; exit 2; }

mkdir -p /tmp/sdns-marker.$$ /var/tmp/sdns-marker.$$
echo "host /tmp marker" >/tmp/sdns-marker.$$/keep
echo "host /var/tmp marker" >/var/tmp/sdns-marker.$$/keep
touch "$W/t0"
sleep 1.1 # find -newer has a granularity
snapshot before

"$@"
rc=$?
echo "hostcheck: command exited $rc"

sleep 2 # let the host's init reap the monitors orphaned by sdns stop
snapshot after
b=$W/snap.before a=$W/snap.after

nonvol=$(diff "$b/sysctl" "$a/sysctl" | grep '^[<>]' | sed 's/^[<>] //' | grep -Ev "$VOLATILE")
if [ -z "$nonvol" ]; then pass "no sysctl changed"; else fail "sysctls changed:"; echo "$nonvol"; fi
for f in mounts links addrs hostname root-opts; do
	if diff -u "$b/$f" "$a/$f"; then pass "host $f unchanged"; else fail "host $f changed"; fi
done
# listening sockets and /tmp entries: other users come and go; sdns's
# guest ports live in its own netns and must never show up here
for f in ss-tcp ss-udp; do
	if diff -q "$b/$f" "$a/$f" >/dev/null; then pass "host $f unchanged"; else
		echo "hostcheck: other: $f changed:"; diff "$b/$f" "$a/$f" | grep '^[<>]'
	fi
done
new_cg=$(comm -13 "$b/cgroups" "$a/cgroups")
if echo "$new_cg" | grep -q 'sdns\.'; then fail "sdns cgroups left: $new_cg"; else pass "no sdns cgroup left"; fi
new_tmp=$(comm -13 "$b/tmp-ls" "$a/tmp-ls")
if echo "$new_tmp" | grep -q '^sdns-'; then fail "sdns directories left in /tmp: $(echo "$new_tmp" | grep '^sdns-' | tr '\n' ' ')"; else pass "no sdns directory left in /tmp"; fi
gone_tmp=$(comm -23 "$b/tmp-ls" "$a/tmp-ls")
[ -z "$new_tmp$gone_tmp" ] || echo "hostcheck: other: /tmp entries added: $(echo $new_tmp) removed: $(echo $gone_tmp)"
if diff -q "$b/vartmp-ls" "$a/vartmp-ls" >/dev/null; then pass "/var/tmp listing unchanged"; else fail "/var/tmp listing changed"; diff "$b/vartmp-ls" "$a/vartmp-ls"; fi
if [ -f /tmp/sdns-marker.$$/keep ] && [ -f /var/tmp/sdns-marker.$$/keep ]; then pass "/tmp and /var/tmp markers survive"; else fail "a /tmp or /var/tmp marker is gone (tmpfiles wipe?)"; fi

new_ps=$(comm -13 <(awk '{print $1, $4}' "$b/ps" | sort) <(awk '{print $1, $4}' "$a/ps" | sort))
leak=$(echo "$new_ps" | grep -E "$SDNS_PROCS" || true)
if [ -z "$leak" ]; then pass "no sdns/systemd/service process left"; else fail "processes left:"; echo "$leak"; fi

# files on / modified during the run: a guest that escaped would write to
# /etc, /usr, /var/lib, /var/log …; the build cache, /tmp and the work
# trees of whoever shares the machine are expected to change
mod=$(find / -xdev -newer "$W/t0" -not -path '/proc/*' -not -path '/tmp/*' -not -path '/var/tmp/sdns-marker*' 2>/dev/null)
bad=$(echo "$mod" | grep -E '^/(etc|usr|var/lib|var/log|var/cache|boot|opt|srv|run)(/|$)' || true)
if [ -z "$bad" ]; then pass "no system file modified"; else fail "system files modified:"; echo "$bad"; fi
other=$(echo "$mod" | grep -vE '^/(etc|usr|var/lib|var/log|var/cache|boot|opt|srv|run)(/|$)' | grep -v '^$' || true)
if [ -n "$other" ]; then
	echo "hostcheck: other: $(echo "$other" | wc -l) files modified elsewhere, by directory:"
	echo "$other" | cut -d/ -f1-4 | sort | uniq -c | sort -rn | head -n 15 | sed 's/^/hostcheck: other:   /'
fi

echo "hostcheck: $FAILS failure(s)"
[ "$FAILS" = 0 ] || exit 1
exit "$rc"
