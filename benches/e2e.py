#!/usr/bin/env python3
"""End-to-end benchmark driver: `fleetsim emulate` in one process, `fleetsim run` against it (remote
target) in another, so the simulator's CPU and memory are measured apart from the emulators'.

For each fleet size and repetition it
  1. starts `fleetsim emulate` (no capacity limits) on fixed loopback ports,
  2. starts `fleetsim run --metrics-addr` with a scenario of N P-256 devices (fresh keys), arriving
     at --rate, sending QoS 1 telemetry every --interval,
  3. scrapes the run's /metrics and reads /proc/<pid>/stat and /proc/<pid>/status of both processes
     every 0.25 s:
       - enrol+connect rate: N / (time from launch until all N devices are online), and the
         sustained rate: devices that came online between the scrapes where 10% and 90% of the
         fleet were online / the time between them (leaves out process start and the tail),
       - once all are online, after --warmup s, over --steady s: PUBACKed messages/s, the run
         process's CPU µs per acked message, and its RSS (VmRSS) at the end of the window,
  4. stops the run with SIGINT (the report is still written) and checks it: no failed device.
It prints one line per run and, per size, the median of the runs (and writes them as JSON).

Usage: python3 benches/e2e.py [--bin target/release/fleetsim] [--sizes 1000,5000,10000]
                              [--runs 3] [--rate 1000] [--interval 0.2] [--steady 20]
       --bin may be given several times (e.g. a baseline build): the binaries then alternate run by
       run, so their ratios are measured side by side on the same (noisy) machine.
       --payload FILE (a file of `telemetry` keys: payload, properties; e.g.
       benches/payload-1kb.yaml) sets what devices send; `sample` is the default message. Given
       several times, the payloads alternate run by run like the binaries.
       --transport-impl rumqttc|lean (`fleet.transport_impl`: which MQTT client carries the
       devices' sessions); given several times, the two alternate run by run like the binaries.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

PORTS = dict(ca=18443, mqtt=18883, websocket=18444, registry=18445, metrics=19464)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def scrape():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['metrics']}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    online = acked = sent_bytes = 0
    for line in text.splitlines():
        if line.startswith('fleetsim_devices{state="online"}'):
            online = int(float(line.split()[-1]))
        elif line.startswith('fleetsim_messages_total{result="acked"}'):
            acked = int(float(line.split()[-1]))
        elif line.startswith("fleetsim_message_bytes_total "):
            sent_bytes = int(float(line.split()[-1]))
    return online, acked, sent_bytes


def start_emulate(binary, work):
    emu_dir = os.path.join(work, "emu")
    proc = subprocess.Popen(
        [binary, "emulate", "--dir", emu_dir,
         "--ca-port", str(PORTS["ca"]), "--mqtt-port", str(PORTS["mqtt"]),
         "--websocket-port", str(PORTS["websocket"]), "--registry-port", str(PORTS["registry"])],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("ready"):
            return proc, emu_dir
    raise RuntimeError("fleetsim emulate did not start")


def telemetry_keys(payload):
    """The `telemetry` keys of a --payload file, indented for the scenario ('' for the sample)."""
    if payload == "sample":
        return ""
    with open(payload) as f:
        return "".join("  " + l if l.strip() else l for l in f)


def scenario(n, rate, interval, emu_dir, payload="sample", impl="rumqttc"):
    # The emulator's own target.yaml (addresses, trust, the ECDSA CA's id), without its comments.
    with open(os.path.join(emu_dir, "target.yaml")) as f:
        target = "".join(l for l in f if not l.lstrip().startswith("#"))
    return f"""name: e2e-{n}
seed: 1
duration: 30m
{target}fleet:
  devices: {n}
  id_pattern: "e2e-{{index:06}}"
  arrival_rate: {rate}/s
  transport_impl: {impl}
certificate:
  key: p256
telemetry:
  interval: {int(interval * 1000)}ms
  qos: 1
{telemetry_keys(payload)}"""


def one_run(binary, n, args, work, payload="sample", impl="rumqttc"):
    emulate, emu_dir = start_emulate(binary, work)
    try:
        path = os.path.join(work, f"e2e-{n}.yaml")
        with open(path, "w") as f:
            f.write(scenario(n, args.rate, args.interval, emu_dir, payload, impl))
        env = dict(os.environ)
        env["EZCA_TOKEN"] = open(os.path.join(emu_dir, "ezca-token")).read().strip()
        env["IOTHUB_CONNECTION_STRING"] = open(
            os.path.join(emu_dir, "hub-connection-string")).read().strip()
        report = os.path.join(work, f"report-{n}.json")
        launched = time.monotonic()
        run = subprocess.Popen(
            [binary, "run", "--quiet", "--metrics-addr", f"127.0.0.1:{PORTS['metrics']}",
             "--report", report, path],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = dict(devices=n, binary=binary, payload=payload, transport_impl=impl)
        all_online = None
        tenth = ninetieth = None
        window = None
        deadline = launched + args.timeout
        while time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.25)
            now = time.monotonic()
            sample = scrape()
            if sample is None:
                continue
            online, acked, sent_bytes = sample
            if tenth is None and online >= n * 0.1:
                tenth = (now, online)
            if ninetieth is None and online >= n * 0.9 and tenth is not None:
                ninetieth = (now, online)
                if ninetieth[0] > tenth[0]:
                    result["sustained_devices_per_s"] = (
                        (ninetieth[1] - tenth[1]) / (ninetieth[0] - tenth[0]))
            if all_online is None and online >= n:
                all_online = now
                result["enrol_connect_s"] = now - launched
                result["devices_per_s"] = n / (now - launched)
            if all_online is not None and window is None and now >= all_online + args.warmup:
                window = (now, acked, cpu_seconds(run.pid), cpu_seconds(emulate.pid), sent_bytes)
            if window is not None and now >= window[0] + args.steady:
                dt = now - window[0]
                msgs = acked - window[1]
                cpu = cpu_seconds(run.pid) - window[2]
                result["msgs_per_s"] = msgs / dt
                result["offered_msgs_per_s"] = n / args.interval
                result["cpu_us_per_msg"] = cpu * 1e6 / max(msgs, 1)
                result["bytes_per_msg"] = (sent_bytes - window[4]) / max(msgs, 1)
                result["run_cpu_share"] = cpu / dt
                result["emulate_cpu_share"] = (cpu_seconds(emulate.pid) - window[3]) / dt
                result["rss_kib"] = rss_kib(run.pid)
                result["rss_kib_per_device"] = result["rss_kib"] / n
                break
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
        try:
            _, err = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            _, err = run.communicate()
        try:
            with open(report) as f:
                rep = json.load(f)
            result["failed_devices"] = rep["devices"]["failed"]
            result["connected"] = rep["devices"]["connected"]
            result["errors"] = sum(rep["errors"].values())
        except (OSError, ValueError, KeyError):
            result["report_error"] = err[-2000:]
        if "msgs_per_s" not in result:
            result["incomplete"] = err[-2000:]
        return result
    finally:
        emulate.send_signal(signal.SIGINT)
        try:
            emulate.wait(timeout=30)
        except subprocess.TimeoutExpired:
            emulate.kill()
            emulate.wait()


KEYS = ["devices_per_s", "sustained_devices_per_s", "enrol_connect_s", "msgs_per_s", "cpu_us_per_msg", "rss_kib",
        "rss_kib_per_device", "run_cpu_share", "emulate_cpu_share", "bytes_per_msg"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bin", action="append")
    p.add_argument("--payload", action="append")
    p.add_argument("--transport-impl", action="append", choices=["rumqttc", "lean"])
    p.add_argument("--sizes", default="1000,5000,10000")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--steady", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", default="e2e-results.json")
    args = p.parse_args()
    binaries = args.bin or ["target/release/fleetsim"]
    payloads = args.payload or ["sample"]
    impls = args.transport_impl or ["rumqttc"]
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="fleetsim-e2e-") as work:
        for n in sizes:
            for i in range(args.runs):
                for b in binaries:
                    for payload in payloads:
                        for impl in impls:
                            r = one_run(os.path.abspath(b), n, args, work, payload, impl)
                            r["run"] = i
                            results.append(r)
                            print(json.dumps(r), flush=True)
    summary = []
    for n in sizes:
        for b in binaries:
            for payload, impl in ((p, t) for p in payloads for t in impls):
                rs = [r for r in results if r["devices"] == n and r["binary"] == os.path.abspath(b)
                      and r["payload"] == payload and r["transport_impl"] == impl]
                med = {k: statistics.median([r[k] for r in rs if k in r]) for k in KEYS
                       if any(k in r for r in rs)}
                spread = {k: [round(r[k], 2) for r in rs if k in r] for k in KEYS}
                summary.append(dict(devices=n, binary=b, payload=payload, transport_impl=impl,
                                    median=med, runs=spread))
                print(f"N={n} {b} {payload} {impl}: "
                      + ", ".join(f"{k}={v:.2f}" for k, v in med.items()), flush=True)
    with open(args.out, "w") as f:
        json.dump(dict(args=vars(args), results=results, summary=summary), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
