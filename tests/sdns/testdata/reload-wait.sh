#!/bin/sh
# ExecReload= helper for the handover tests: send SIGHUP to the main process
# and return only once systemd reports another MainPID (bounded: 5 s), so
# that "systemctl reload" is synchronous, as "baton upgrade --wait" makes it
# for baton-demo.  Usage: ExecReload=/path/reload-wait $MAINPID %n
old=$1 unit=$2 i=0
kill -HUP "$old" || exit 1
while [ "$(systemctl show -P MainPID "$unit")" = "$old" ]; do
	i=$((i + 1))
	[ $i -le 250 ] || { echo "reload-wait: MainPID still $old after 5s" >&2; exit 1; }
	sleep 0.02
done
