#!/usr/bin/env bash
# A distributed run on one machine: SHARDS `fleetsim run --shard i/SHARDS` processes of
# PER_SHARD devices each against one `fleetsim emulate`, started together by a start barrier,
# delivering their reports to `fleetsim collect`, whose merged report and verdict it prints,
# with each process's peak RSS and the machine's load average while it ran.
#
#   cargo build --release && bash benches/shards.sh                   # 4 shards x 4,900 devices
#   SHARDS=4 PER_SHARD=5000 bash benches/shards.sh                    # 20,000: past emulate's fds
#
# One `fleetsim emulate` holds every device's MQTT connection, so the whole fleet must fit its
# open-file limit (`ulimit -Hn`; 20,000 on the project machine) less ~100 of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-4}
PER_SHARD=${PER_SHARD:-4900}
RATE=${RATE:-200/s}
DURATION=${DURATION:-150s}
INTERVAL=${INTERVAL:-5s}
LEAD=${LEAD:-15}
BIN=${BIN:-target/release/fleetsim}
OUT=${OUT:-$(mktemp -d /tmp/fleetsim-shards.XXXXXX)}
mkdir -p "$OUT"
DEVICES=$(( SHARDS * PER_SHARD ))

"$BIN" emulate --ca-port 0 --mqtt-port 0 --websocket-port 0 --registry-port 0 --amqp-port 0 \
  --no-dps --dir "$OUT/emulator" >"$OUT/emulate.log" 2>&1 &
emulate=$!
pids=()
cleanup() { for p in "${pids[@]}" "$emulate"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq 60); do grep -q '^ready' "$OUT/emulate.log" && break; sleep 1; done
grep -q '^ready' "$OUT/emulate.log" || { cat "$OUT/emulate.log"; exit 1; }

cat >"$OUT/scenario.yaml" <<EOF
name: shards-$DEVICES
description: $DEVICES devices in $SHARDS shards against one fleetsim emulate
seed: $DEVICES
duration: $DURATION
$(grep -v '^#' "$OUT/emulator/target.yaml")
fleet:
  devices: $DEVICES
  id_pattern: "shard-{index:06}"
  arrival_rate: $RATE
certificate:
  key: p256
telemetry:
  interval: $INTERVAL
  qos: 1
report:
  interval: 10s
thresholds:
  - failed_devices == 0
  - errors rate < 0.1%
EOF
export EZCA_TOKEN=$(cat "$OUT/emulator/ezca-token")
export IOTHUB_CONNECTION_STRING=$(cat "$OUT/emulator/hub-connection-string")

start_at=$(date -u -d "+$LEAD seconds" +%Y-%m-%dT%H:%M:%SZ)
"$BIN" collect --listen 127.0.0.1:0 --expect "$SHARDS" --out "$OUT/results" \
  --thresholds "$OUT/scenario.yaml" --start-at "$start_at" --grace 2m >"$OUT/collect.log" 2>&1 &
collect=$!
for _ in $(seq 30); do grep -q 'listening on' "$OUT/collect.log" && break; sleep 0.2; done
url=$(grep -o 'http://[^ ]*/reports' "$OUT/collect.log")
for i in $(seq 0 $(( SHARDS - 1 ))); do
  "$BIN" run --quiet --shard "$i/$SHARDS" --start-at "$start_at" --report "$OUT/shard-$i.json" \
    --report-to "$url" "$OUT/scenario.yaml" >"$OUT/shard-$i.log" 2>&1 &
  pids+=($!)
done

# Peak RSS per process and the load average, every 5 s, until the collector has judged.
declare -A peak
echo "seconds load1" >"$OUT/load.tsv"
begun=$(date +%s)
while kill -0 "$collect" 2>/dev/null; do
  for p in "${pids[@]}" "$emulate"; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    if [ -n "$rss" ] && [ "$rss" -gt "${peak[$p]:-0}" ]; then peak[$p]=$rss; fi
  done
  echo "$(( $(date +%s) - begun )) $(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/load.tsv"
  sleep 5
done
verdict=0
wait "$collect" || verdict=$?

sed -n '/^fleetsim report:/,$p' "$OUT/collect.log"
for i in $(seq 0 $(( SHARDS - 1 ))); do
  echo "shard $i/$SHARDS: peak RSS $(( ${peak[${pids[$i]}]:-0} / 1024 )) MiB; $(grep -E '^devices:' "$OUT/shard-$i.log" || true)"
done
echo "emulate: peak RSS $(( ${peak[$emulate]:-0} / 1024 )) MiB"
awk 'NR > 1 { n++; s += $2; if ($2 > m) m = $2 } END { if (n) printf "load average (1 min) while running: mean %.1f, max %.1f over %d samples\n", s/n, m, n }' "$OUT/load.tsv"
echo "collector exit status $verdict; files in $OUT"
