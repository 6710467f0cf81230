#!/usr/bin/env python3
"""bench/membership.py: measure shoal's membership on 127.0.0.1, phase for phase
like ../shared/peers/serf_bench.sh, so the two can be quoted side by side.

Usage: bench/membership.py [N] [--runs R] [--profile lan] [--stop-secs "2 5 8 12"]
       [--port-base 29000] [--steady-secs 20] [--shoal build/release/bin/shoal]

Phases per run (one fresh mesh per run, encryption always on):
 (a) join:   start agent 0, then agents 1..N-1 with --join agent0; join_s = from
             launching agent 0 until every agent lists N alive (polled every 100 ms).
 (d) steady: 5 s settle, then a window: CPU (utime+stime), RSS, UDP datagrams out
             per agent per second (/proc/net/snmp; loopback otherwise idle).
 (e) update: set agent 0's catalog version through its admin API; every agent's
             /v1/events stream is open beforehand and timestamps the arrival of
             the update; upd_all_s = time until the last agent has it (median of
             EVENTS updates), upd_p50_s = median per-agent latency.
 (b) detect: kill -9 agent N-1; detect_* = first / median / last agent to emit its
             "dead" event (event streams opened before the kill).
 (c) false positives: SIGSTOP agent N-2 for S s, SIGCONT, watch 10 s more;
             fp=1 if any agent ever listed any live agent dead; accuse = suspect or
             dead events the resumed agent raised about healthy peers.
Polling uses the admin API directly (HTTP GET /v1/members) from a thread pool.
Only processes started here are signalled (by pid).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HZ = os.sysconf("SC_CLK_TCK")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def udp_out():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    return int(lines[1][lines[0].index("OutDatagrams")])


class Mesh:
    def __init__(self, args):
        self.args = args
        self.root = tempfile.mkdtemp(prefix="shoal-bench-")
        self.procs = {}
        key = subprocess.run([args.shoal, "keygen"], check=True, capture_output=True, text=True).stdout
        self.key_file = os.path.join(self.root, "cluster.key")
        with open(self.key_file, "w") as f:
            f.write(key)
        os.chmod(self.key_file, 0o600)
        self.pool = ThreadPoolExecutor(max_workers=16)

    def gport(self, i):
        return self.args.port_base + 2 * i

    def aport(self, i):
        return self.args.port_base + 2 * i + 1

    def start(self, i, join=None):
        cmd = [self.args.shoal, "agent", "--name", f"n{i}", "--dc", f"dc{i % 3 + 1}",
               "--data-dir", os.path.join(self.root, f"d{i}"), "--bind", f"127.0.0.1:{self.gport(i)}",
               "--admin", f"127.0.0.1:{self.aport(i)}", "--cluster-key-file", self.key_file,
               "--profile", self.args.profile, "--log-level", "warn"]
        if join is not None:
            cmd += ["--join", f"127.0.0.1:{self.gport(join)}"]
        log = open(os.path.join(self.root, f"n{i}.log"), "wb")
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def get(self, i, path, timeout=2):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.aport(i)}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, i, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.aport(i)}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read() or b"null")

    def members(self, i):
        try:
            return {m["name"]: m for m in self.get(i, "/v1/members")}
        except (OSError, ValueError):
            return None

    def poll(self, idxs):
        return dict(zip(idxs, self.pool.map(self.members, idxs)))

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.pool.shutdown()
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print(f"logs kept in {self.root}", file=sys.stderr)


class EventStreams:
    """Holds /v1/events open on every agent; records (time, agent, event json)."""

    def __init__(self, mesh, idxs):
        self.records = []
        self.lock = threading.Lock()
        self.responses = []
        self.threads = []
        for i in idxs:
            t = threading.Thread(target=self.read, args=(mesh, i), daemon=True)
            t.start()
            self.threads.append(t)
        time.sleep(0.5)

    def read(self, mesh, i):
        try:
            r = urllib.request.urlopen(f"http://127.0.0.1:{mesh.aport(i)}/v1/events", timeout=3600)
            self.responses.append(r)
            for line in r:
                now = time.monotonic()
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                with self.lock:
                    self.records.append((now, i, e))
        except Exception:
            pass

    def close(self):
        for r in self.responses:
            try:
                r.close()
            except Exception:
                pass


def wait_all(mesh, idxs, pred, deadline_s, poll_s=0.1):
    """Polls agents until pred(members) holds for each; returns {idx: time first seen}."""
    seen = {}
    pending = list(idxs)
    end = time.monotonic() + deadline_s
    while pending and time.monotonic() < end:
        t = time.monotonic()
        res = mesh.poll(pending)
        now = time.monotonic()
        for i, ms in res.items():
            if ms is not None and pred(ms):
                seen[i] = now
        pending = [i for i in pending if i not in seen]
        time.sleep(max(0, poll_s - (time.monotonic() - t)))
    return seen


def run_once(args, run):
    n = args.n
    mesh = Mesh(args)
    out = {}
    try:
        # (a) join
        t0 = time.monotonic()
        mesh.start(0)
        for _ in range(200):
            if mesh.members(0) is not None:
                break
            time.sleep(0.02)
        for i in range(1, n):
            mesh.start(i, join=0)
        t_launch = time.monotonic()
        alive_n = lambda ms: sum(1 for m in ms.values() if m["status"] == "alive") == n
        seen = wait_all(mesh, range(n), alive_n, 60)
        if len(seen) < n:
            raise RuntimeError("join did not converge in 60 s")
        out["join_s"] = max(seen.values()) - t0
        out["join_after_launch_s"] = max(seen.values()) - t_launch
        out["launch_s"] = t_launch - t0

        # (d) steady state
        time.sleep(args.settle_secs)
        pids = {i: p.pid for i, p in mesh.procs.items()}

        def ticks(pid):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        def rss_mb(pid):
            with open(f"/proc/{pid}/status") as f:
                for l in f:
                    if l.startswith("VmRSS:"):
                        return int(l.split()[1]) / 1024
            return 0

        c0 = {i: ticks(p) for i, p in pids.items()}
        u0, w0 = udp_out(), time.monotonic()
        time.sleep(args.steady_secs)
        c1 = {i: ticks(p) for i, p in pids.items()}
        u1, w1 = udp_out(), time.monotonic()
        cpu = [100.0 * (c1[i] - c0[i]) / HZ / (w1 - w0) for i in pids]
        rss = [rss_mb(p) for p in pids.values()]
        out["cpu_pct_median"] = median(cpu)
        out["cpu_pct_max"] = max(cpu)
        out["rss_mb_median"] = median(rss)
        out["rss_mb_max"] = max(rss)
        out["udp_out_dgrams_per_agent_s"] = (u1 - u0) / n / (w1 - w0)

        # (e) update dissemination
        streams = EventStreams(mesh, range(n))
        upd_all, upd_per = [], []
        for e in range(1, args.events + 1):
            version = 1000 + e
            with streams.lock:
                streams.records.clear()
            te = time.monotonic()
            mesh.post(0, "/v1/catalog-version", {"version": version})
            end = te + 20
            got = {}
            while time.monotonic() < end and len(got) < n:
                with streams.lock:
                    for (t, i, ev) in streams.records:
                        m = ev.get("member", {})
                        if m.get("name") == "n0" and m.get("catalog_version", 0) >= version and i not in got:
                            got[i] = t - te
                time.sleep(0.01)
            # Agent 0 knows its own version at once; it may not emit an event about itself.
            got.setdefault(0, 0.0)
            upd_per += list(got.values())
            upd_all.append(max(got.values()) if len(got) >= n else 99)
            time.sleep(1)
        streams.close()
        out["upd_all_s"] = median(upd_all)
        out["upd_p50_s"] = median(upd_per)

        # (b) detection of kill -9. Every surviving agent's event stream is
        # open before the kill and timestamps its "dead" event for the victim:
        # exact, and without the load that polling 64 agents every 100 ms puts
        # on a 2-core machine. (serf_bench.sh polls; its figures include up to
        # one poll round, which it reports as poll_round_ms.)
        victim = n - 1
        streams = EventStreams(mesh, range(n - 1))
        mesh.procs[victim].kill()
        tk = time.monotonic()
        mesh.procs[victim].wait()
        end = tk + 180
        seen = {}
        while time.monotonic() < end and len(seen) < n - 1:
            with streams.lock:
                for (t, i, ev) in streams.records:
                    if ev.get("event") == "dead" and ev.get("member", {}).get("name") == f"n{victim}":
                        seen.setdefault(i, t)
            time.sleep(0.02)
        streams.close()
        lat = sorted(t - tk for t in seen.values())
        out["detect_first_s"] = lat[0] if lat else float("nan")
        out["detect_median_s"] = median(lat)
        out["detect_all_s"] = lat[-1] if lat else float("nan")
        out["undetected"] = (n - 1) - len(seen)

        # (c) false positives under SIGSTOP
        target = n - 2
        others = list(range(n - 2))
        for s in args.stop_secs:
            wait_all(mesh, others + [target], lambda ms: ms.get(f"n{target}", {}).get("status") == "alive", 30)
            time.sleep(3)
            streams = EventStreams(mesh, [target])
            fp, fp_nodes = 0, set()
            p = mesh.procs[target]
            p.send_signal(signal.SIGSTOP)
            ts = time.monotonic()
            resumed = False
            while time.monotonic() < ts + s + args.post_secs:
                if not resumed and time.monotonic() >= ts + s:
                    p.send_signal(signal.SIGCONT)
                    resumed = True
                t = time.monotonic()
                res = mesh.poll(others + ([target] if resumed else []))
                for i, ms in res.items():
                    if ms is None:
                        continue
                    for name, m in ms.items():
                        if m["status"] == "dead" and name != f"n{victim}":
                            fp = 1
                            fp_nodes.add(f"{name}@n{i}")
                time.sleep(max(0, 0.1 - (time.monotonic() - t)))
            if not resumed:
                p.send_signal(signal.SIGCONT)
            with streams.lock:
                accuse = sum(1 for (_, _, ev) in streams.records
                             if ev.get("event") in ("suspect", "dead", "stalled")
                             and ev.get("member", {}).get("name") not in (f"n{target}", f"n{victim}"))
            streams.close()
            out[f"fp_S{s}"] = fp
            out[f"accuse_S{s}"] = accuse
            if fp_nodes:
                print(f"  S={s} dead-observations: {' '.join(sorted(fp_nodes)[:5])}", file=sys.stderr)
    finally:
        mesh.stop()
    return out


def fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=16)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", default="lan")
    ap.add_argument("--stop-secs", default="2 5")
    ap.add_argument("--port-base", type=int, default=29000)
    ap.add_argument("--settle-secs", type=float, default=5)
    ap.add_argument("--steady-secs", type=float, default=20)
    ap.add_argument("--post-secs", type=float, default=10)
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--shoal", default=os.path.join(os.path.dirname(__file__), "..", "build", "release", "bin", "shoal"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", help="also append result lines to this file")
    args = ap.parse_args()
    args.stop_secs = [int(x) for x in args.stop_secs.split()]
    if args.n < 3 or args.port_base + 2 * args.n > 29999:
        ap.error("N must be >= 3 and ports must stay below 30000")
    results = []
    for r in range(1, args.runs + 1):
        try:
            res = run_once(args, r)
        except Exception as e:
            print(f"run {r} failed: {e}", file=sys.stderr)
            continue
        line = f"shoal_bench N={args.n} profile={args.profile} run={r} " + " ".join(f"{k}={fmt(v)}" for k, v in res.items())
        print(line, flush=True)
        results.append(res)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    if len(results) > 1:
        keys = [k for k in results[0] if not k.startswith("fp_") and not k.startswith("accuse_")]
        summary = f"shoal_bench_median N={args.n} profile={args.profile} runs={len(results)} "
        summary += " ".join(f"{k}={fmt(median([r[k] for r in results]))}" for k in keys)
        for s in args.stop_secs:
            summary += f" fp_S{s}_runs={sum(r[f'fp_S{s}'] for r in results)}/{len(results)}"
        print(summary)
        if args.out:
            with open(args.out, "a") as f:
                f.write(summary + "\n")
    sys.exit(0 if len(results) == args.runs else 1)


if __name__ == "__main__":
    main()
