#!/usr/bin/env bash
# session.sh - make the data behind docs/dashboard.png, then draw it.
#
#   tests/dashpng/session.sh [OUT.png]     (from anywhere; about 4 minutes)
#
# Starts Debian's prometheus (apt-get install prometheus) scraping a
# baton-demo every second on 127.0.0.1, with contrib/prometheus/alerts.yml
# loaded, puts 300 requests/s on the demo (tests/loadcmd) and runs seven
# upgrades with baton upgrade --wait, 20 s apart, with six server-sent-event
# streams open: two that succeed, one the
# new process refuses (fault injection: new-reject), its retry, one more,
# one rolled back during the probation (the new process dies 300 ms after
# it starts serving: new-crash-serving), and its retry. Then it evaluates
# every panel of contrib/grafana/baton.json over the session with
# go run ./tests/dashpng and prints the alerts Prometheus fired. Everything
# it starts is stopped by pid at the end; its files live in a temporary
# directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/dashboard.png}
PORT=${DASHPNG_PORT:-18480}
PROMPORT=${DASHPNG_PROM_PORT:-19091}
W=$(mktemp -d /tmp/dashpng.XXXXXX)
PIDS=()
cleanup() {
	exec 3>&- 2>/dev/null || true
	touch "$W/stop" # the event streams' loops end once the demo is gone
	if [ -s "$W/demo.pid" ]; then kill -TERM "$(cat "$W/demo.pid")" 2>/dev/null || true; fi
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

command -v prometheus >/dev/null || { echo "session.sh: prometheus not installed (apt-get install prometheus)" >&2; exit 1; }
go build -o "$W/" ./cmd/baton ./tests/loadcmd
go build -tags batonfault -ldflags "-X main.version=v1" -o "$W/baton-demo" ./cmd/baton-demo

cat >"$W/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$PWD/contrib/prometheus/alerts.yml"]
scrape_configs:
  - job_name: baton-demo
    static_configs: [{targets: ["127.0.0.1:$PORT"]}]
YML
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/tsdb" \
	--web.listen-address="127.0.0.1:$PROMPORT" --log.level=warn >"$W/prometheus.log" 2>&1 &
PIDS+=($!)

# Generation 3's first attempt rejects the state; generation 5's first
# attempt serves, then exits during the old process's probation.
BATON_FAULT=new-reject@3.1,new-crash-serving@5.1 BATON_FAULT_DELAY=300ms \
	"$W/baton-demo" -addr "127.0.0.1:$PORT" -pidfile "$W/demo.pid" -control "$W/demo.sock" \
	-tasks 200 -task-interval 100ms -probation 2s >"$W/demo.log" 2>&1 &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "session.sh: baton-demo does not serve:" >&2; cat "$W/demo.log" >&2; exit 1; }
mkfifo "$W/load.ctl"
"$W/loadcmd" -url "http://127.0.0.1:$PORT" -rate 300 -clients 16 -max 10m <"$W/load.ctl" >"$W/load.out" 2>&1 &
PIDS+=($!)
exec 3>"$W/load.ctl"
for _ in $(seq 100); do grep -q running "$W/load.out" 2>/dev/null && break; sleep 0.1; done
grep -q running "$W/load.out" || { echo "session.sh: the load did not start:" >&2; cat "$W/load.out" >&2; exit 1; }
# Six clients hold a GET /events stream open, each an in-flight request for
# as long as it lasts, and reconnect when a draining process says "bye":
# the in-flight panel shows them move to each new generation.
for _ in 1 2 3 4 5 6; do
	(exec 3>&- # the load's stdin must reach EOF when the script closes it
	while [ ! -e "$W/stop" ]; do curl -sN --max-time 600 "http://127.0.0.1:$PORT/events" >/dev/null 2>&1 || sleep 0.2; done) &
	PIDS+=($!)
done
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "session.sh: serving and scraped from $START"
sleep 30
for what in ok ok refused ok ok rolled-back ok; do
	set +e
	"$W/baton" upgrade --wait --socket "$W/demo.sock" >"$W/upgrade.out" 2>&1
	rc=$?
	set -e
	echo "session.sh: upgrade ($what expected): exit $rc: $(tail -n 1 "$W/upgrade.out")"
	sleep 20
done
sleep 10
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
exec 3>&-
for _ in $(seq 100); do [ "$(wc -l <"$W/load.out")" -ge 2 ] && break; sleep 0.1; done
[ "$(wc -l <"$W/load.out")" -ge 2 ] || { echo "session.sh: the load did not report" >&2; exit 1; }
echo "session.sh: load: $(tail -n 1 "$W/load.out")"
echo "session.sh: alerts: $(curl -s "127.0.0.1:$PROMPORT/api/v1/alerts")"
go run ./tests/dashpng -prometheus "http://127.0.0.1:$PROMPORT" -since "$START" -until "$END" -out "$OUT"
