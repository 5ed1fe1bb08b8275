#!/bin/bash
# usage: scale-tasks-upgrade.sh BINARY_DIR PORT [TASKS] [WAIT] [DEMO FLAGS...]
# Starts BINARY_DIR/baton-demo with TASKS tasks (every 10 s, 10 s of jitter) on
# 127.0.0.1:PORT, waits WAIT seconds, sends SIGHUP and prints: the old process's
# VmRSS, trigger -> pid file names the new process, the new one's VmHWM 3 s
# later and their ratio, the work pause (GET /tasks), and the log lines of the
# handoff. DEMO FLAGS go to baton-demo as they are: -tasks-as-data makes the
# tasks data of a registered kind, restored from the snapshot without a
# registration per task. KEEP=1 keeps the run dir (its log, with the
# environment's GODEBUG=gctrace=1 output, say). Needs bc and curl; run dirs
# under /tmp/scale.
set -u
dir=$1; port=$2; n=${3:-1000000}; wait=${4:-25}
shift $(( $# < 4 ? $# : 4 )); extra=("$@")
mkdir -p /tmp/scale && run=$(mktemp -d /tmp/scale/run.XXXX)
cp $dir/baton-demo $run/baton-demo
cd $run
./baton-demo -addr 127.0.0.1:$port -pidfile $run/pid -tasks $n -task-interval 10s -task-jitter 10s -drain 5s -upgrade-timeout 120s "${extra[@]}" >$run/log 2>&1 &
demo=$!
for i in $(seq 1 600); do [ -s $run/pid ] && break; sleep 0.2; done
old=$(cat $run/pid)
sleep $wait
rss_old=$(awk '/VmRSS/{print $2}' /proc/$old/status)
t0=$(date +%s.%N)
kill -HUP $old
new=$old
for i in $(seq 1 30000); do
  p=$(cat $run/pid 2>/dev/null)
  if [ -n "$p" ] && [ "$p" != "$old" ]; then new=$p; break; fi
  sleep 0.001
done
t1=$(date +%s.%N)
sleep 3
hwm_new=$(awk '/VmHWM/{print $2}' /proc/$new/status)
sleep 12
rss_new=$(awk '/VmRSS/{print $2}' /proc/$new/status)
pause=$(curl -s 127.0.0.1:$port/tasks?limit=1 | grep -o '"pause_ns":[0-9]*')
echo "tasks=$n flags=[${extra[*]}] old_rss_kb=$rss_old switch_s=$(echo "$t1 - $t0" | bc) new_hwm_kb=$hwm_new ratio=$(echo "scale=3; $hwm_new / $rss_old" | bc) new_rss_after_kb=$rss_new $pause"
grep -E "restored|upgraded|state sent|bytes|starting new process|said hello|participants frozen|serving" $run/log | head -12 | cut -c1-300
kill -TERM $new; sleep 3; kill -0 $new 2>/dev/null && kill -KILL $new
wait $demo 2>/dev/null
if [ -n "${KEEP:-}" ]; then echo "kept $run"; else rm -rf $run; fi
