#!/usr/bin/env bash
# Direct methods the embedded hub and the fleet sustain, and the memory a device's cloud
# subscriptions add (BENCHMARKS.md, "Direct methods").
#
#   benches/methods.sh [DEVICES...]        (default: 1000 10000)
#
# For each fleet size, three runs of one generated scenario, each against a fresh `fleetsim emulate`
# in its own process (as `scenarios/fleet-10k.yaml` runs: in one process a 10,000-device fleet and
# its hub would need 20,000 sockets, the machine's open-file limit), the run under /usr/bin/time -v
# for its peak RSS, the emulator's sampled every second:
#   telemetry  devices connect and send QoS 1 telemetry every 30 s, nothing else;
#   subscribed the same, and every device subscribes to methods, desired properties and twin
#              answers, reads its twin and sends its reported properties after connecting;
#   methods    subscribed, and three waves of a `ping` direct method to every device (no rate:
#              as fast as the operator's 1,000 calls in flight and the hub allow; the fleet's
#              method limit is off, and the emulator's hub has no tier, so no throttle).
# It prints, per wave, the devices, the outcome counts, the span and the methods per second (the
# report's operator section), and per run the peak RSS of the run and of the emulator. Runs use
# target/release/fleetsim (or $BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
bin=${BIN:-target/release/fleetsim}
[ -x "$bin" ] || { echo "benches/methods.sh: build first: cargo build --release" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "benches/methods.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill ${emu:-} 2>/dev/null; rm -rf "$work"' EXIT

# scenario DEVICES KIND TARGET_YAML > file
scenario() {
  local n=$1 kind=$2 target=$3
  local rate=$(( n / 50 )); [ "$rate" -ge 100 ] || rate=100
  local arrive=$(( n / rate + 10 ))      # seconds until all are online, with slack
  local duration=$(( arrive + 45 ))
  cat <<EOF
name: methods-$kind-$n
seed: 7
duration: ${duration}s
$(grep -v '^#' "$target")
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

# emulate DIR: starts `fleetsim emulate` on free ports, waits until it is ready, prints its pid.
emulate() {
  "$bin" emulate --ca-port 0 --mqtt-port 0 --websocket-port 0 --registry-port 0 --amqp-port 0 \
    --no-dps --dir "$1" >"$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 60); do grep -q '^ready' "$1.log" && break; sleep 1; done
  grep -q '^ready' "$1.log" || { cat "$1.log" >&2; exit 1; }
  echo "$pid"
}

for n in "${sizes[@]}"; do
  for kind in telemetry subscribed methods; do
    rm -rf "$work/emu" "$work/emu.log"
    emu=$(emulate "$work/emu")
    scenario "$n" "$kind" "$work/emu/target.yaml" > "$work/s.yaml"
    EZCA_TOKEN=$(cat "$work/emu/ezca-token") \
      IOTHUB_CONNECTION_STRING=$(cat "$work/emu/hub-connection-string") \
      /usr/bin/time -v "$bin" run --quiet --report "$work/r.json" "$work/s.yaml" \
      > "$work/out.txt" 2> "$work/time.txt" &
    run=$!
    emu_peak=0
    while kill -0 "$run" 2>/dev/null; do
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$emu/status" 2>/dev/null || echo 0)
      [ "${rss:-0}" -gt "$emu_peak" ] && emu_peak=$rss
      sleep 1
    done
    wait "$run" || true
    kill "$emu"; wait "$emu" 2>/dev/null || true
    rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$work/time.txt")
    connected=$(grep -m1 '^devices:' "$work/out.txt" || true)
    echo "== $n devices, $kind: peak RSS run ${rss} MiB, emulate $(( emu_peak / 1024 )) MiB; $connected"
    grep -E '^  method ' "$work/out.txt" || true
    grep -E '^(method\.invoke|method\.device|twin\.reported) ' "$work/out.txt" || true
    sed -n '/^errors/,/^$/p' "$work/out.txt" | head -8
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
