#!/usr/bin/env bash
# Direct methods the embedded hub and the fleet sustain, and the memory a device's cloud
# subscriptions add (BENCHMARKS.md, "Direct methods").
#
#   benches/methods.sh [DEVICES...]        (default: 1000 10000)
#
# For each fleet size, three runs of one generated scenario against the embedded target (CA, hub
# and fleet in one process), each under /usr/bin/time -v for the peak RSS:
#   telemetry  devices connect and send QoS 1 telemetry every 30 s, nothing else;
#   subscribed the same, and every device subscribes to methods, desired properties and twin
#              answers, reads its twin and sends its reported properties after connecting;
#   methods    subscribed, and three waves of a `ping` direct method to every device (no rate:
#              as fast as the operator's 1,000 calls in flight and the hub allow; the fleet's
#              method limit is off, and the embedded hub has no tier, so no throttle).
# It prints, per wave, the devices, the outcome counts, the span and the methods per second (the
# report's operator section), and per run the peak RSS. Runs use target/release/fleetsim.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
bin=target/release/fleetsim
[ -x "$bin" ] || { echo "benches/methods.sh: build first: cargo build --release" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "benches/methods.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# scenario DEVICES KIND > file
scenario() {
  local n=$1 kind=$2
  local rate=$(( n / 40 )); [ "$rate" -ge 100 ] || rate=100
  local arrive=$(( n / rate + 10 ))      # seconds until all are online, with slack
  local duration=$(( arrive + 45 ))
  cat <<EOF
name: methods-$kind-$n
seed: 7
duration: ${duration}s
target:
  embedded: {}
fleet:
  devices: $n
  id_pattern: "m-{index:05}"
  arrival_rate: $rate/s
  registration: bulk
certificate: {key: p256}
telemetry: {interval: 30s, qos: 1}
EOF
  if [ "$kind" != telemetry ]; then
    cat <<EOF
behaviour:
  reported: {firmwareVersion: "1.0.0"}
  methods:
    ping: {status: 200, payload: {pong: "{device_id}"}}
EOF
  fi
  if [ "$kind" = methods ]; then
    echo "events:"
    for wave in 0 1 2; do
      echo "  - at: $(( arrive + 5 + wave * 12 ))s"
      echo "    method: {name: ping, payload: {}, devices: 100%, response_timeout: 30s}"
    done
  fi
}

for n in "${sizes[@]}"; do
  for kind in telemetry subscribed methods; do
    scenario "$n" "$kind" > "$work/s.yaml"
    /usr/bin/time -v "$bin" run --quiet --report "$work/r.json" "$work/s.yaml" \
      > "$work/out.txt" 2> "$work/time.txt" || true
    rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$work/time.txt")
    connected=$(grep -m1 '^devices:' "$work/out.txt" || true)
    echo "== $n devices, $kind: peak RSS ${rss} MiB; $connected"
    grep -E '^  method ' "$work/out.txt" || true
    grep -E '^(method\.invoke|method\.device|twin\.reported) ' "$work/out.txt" || true
    grep -E '^(errors|thresholds|  (PASS|FAIL))' "$work/out.txt" | head -5 || true
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
