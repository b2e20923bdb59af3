#!/usr/bin/env bash
# Soak memory: is the simulator's memory flat over a long renewal soak?
#
# `fleetsim emulate` runs in its own process (its CA keeps every certificate it issued, which
# grows by design), and `fleetsim run` drives DEVICES devices against it through the remote
# target for MINUTES minutes with compressed time, so certificates renew every ~48 s. The run
# process's RSS is sampled every SAMPLE seconds; the script prints the samples and the least-
# squares slope of RSS over the second half of the run (after the fleet has arrived).
#
#   cargo build --release && bash benches/soak-rss.sh            # 2,000 devices, 30 minutes
#   DEVICES=500 MINUTES=3 bash benches/soak-rss.sh                # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-2000}
MINUTES=${MINUTES:-30}
SAMPLE=${SAMPLE:-30}
BIN=${BIN:-target/release/fleetsim}
OUT=${OUT:-$(mktemp -d /tmp/fleetsim-soak.XXXXXX)}
mkdir -p "$OUT"

"$BIN" emulate --ca-port 0 --mqtt-port 0 --websocket-port 0 --registry-port 0 \
  --time-scale 2s --dir "$OUT/emulator" >"$OUT/emulate.log" 2>&1 &
emulate=$!
cleanup() { kill "$emulate" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 60); do grep -q '^ready' "$OUT/emulate.log" && break; sleep 1; done
grep -q '^ready' "$OUT/emulate.log" || { cat "$OUT/emulate.log"; exit 1; }

cat >"$OUT/soak.yaml" <<EOF
name: soak-rss
description: $DEVICES devices renewing 30-day certificates every ~48 s for $MINUTES minutes
duration: ${MINUTES}m
$(grep -v '^#' "$OUT/emulator/target.yaml")
fleet:
  devices: $DEVICES
  arrival_rate: 50/s
certificate:
  validity_days: 30      # 60 s of real time at --time-scale 2s
  renew_at: 80%
telemetry:
  interval: 10s
  qos: 1
EOF

EZCA_TOKEN=$(cat "$OUT/emulator/ezca-token") \
IOTHUB_CONNECTION_STRING=$(cat "$OUT/emulator/hub-connection-string") \
  "$BIN" run --quiet --report "$OUT/report.json" "$OUT/soak.yaml" >"$OUT/run.log" 2>&1 &
run=$!
start=$(date +%s)
echo "seconds rss_kib" >"$OUT/rss.tsv"
while kill -0 "$run" 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$run/status" 2>/dev/null || true)
  [ -n "$rss" ] && echo "$(( $(date +%s) - start )) $rss" >>"$OUT/rss.tsv"
  sleep "$SAMPLE"
done
wait "$run" || { echo "run failed:"; tail -30 "$OUT/run.log"; exit 1; }

cat "$OUT/rss.tsv"
awk -v half=$(( MINUTES * 30 )) 'NR > 1 && $1 >= half { n++; sx += $1; sy += $2; sxx += $1*$1; sxy += $1*$2 }
  END { if (n < 2) { print "too few samples"; exit }
        slope = (n*sxy - sx*sy) / (n*sxx - sx*sx);
        printf "second half: %d samples, mean RSS %.0f KiB, slope %.2f KiB/min (%.3f%% of the mean per hour)\n",
          n, sy/n, slope*60, slope*3600*100/(sy/n) }' "$OUT/rss.tsv"
grep -E '^(devices|messages):' "$OUT/run.log" || true
echo "files in $OUT"
