#!/usr/bin/env python3
"""Message benchmark: two (or three) `ferry daemon` processes on loopback, driven the way a
user's front end drives them, through the control socket; arrivals are timed from the
receiver's event stream (`daemon --json`).

Usage:  python3 scripts/bench_messages.py [--ferry PATH] [--floors PATH] [--pings 200]
                                          [--burst 2000] [--burst-lanes 4]
                                          [--flood-lanes 4] [--runs 1]

It runs in a private network namespace (`unshare -n`, loopback only). Unless given, it builds
`ferry` and the `floors` example in release mode. It prints one table:

- `send` returns: the control call, durable on the sender (p50 / p99 / max);
- ping-pong: Alice's send to Bob's stored-and-shown event, one message at a time;
- burst: N messages sent back to back from several of Alice's control connections at once;
  when the last one arrived, how many arrived, in order (per connection), duplicated, and how
  many still waited in Alice's outbox afterwards;
- backlog: N messages queued while Bob's daemon is stopped, then the time from its restart to
  the last of them shown: the delivery between the daemons alone (batches, both flushes);
- fairness: Alice→Bob ping-pong while Carol floods Bob as fast as she can;
- memory (with `--memory N`): Alice's and Bob's RSS when idle after pairing, then after N more
  messages and after N more again (growth between the two is what the messages leave behind);
- and next to them, the floors measured in the same run: fsync, sled insert + flush, and an
  iroh echo round trip (the `floors` example).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import isolate

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WAIT = 120  # seconds any single wait may take before the run is declared broken


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout.strip()


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, round((len(s) - 1) * q))]


def ms3(samples):
    """p50 / p99 / max in milliseconds."""
    if not samples:
        return "–"
    return f"{pct(samples, 0.5) * 1e3:.2f} / {pct(samples, 0.99) * 1e3:.2f} / {max(samples) * 1e3:.2f}"


class Control:
    """One control-socket connection (JSON lines)."""

    def __init__(self, home):
        path = os.path.join(home, "control.sock")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.r = self.s.makefile("r")
        self.next = 1

    def call(self, method, **args):
        rid = self.next
        self.next += 1
        line = json.dumps({"v": 1, "id": rid, "call": {"method": method, **args}}) + "\n"
        self.s.sendall(line.encode())
        answer = json.loads(self.r.readline())
        if answer.get("id") != rid:
            raise RuntimeError(f"answer for another request: {answer}")
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("ok")


class Daemon:
    """A `ferry daemon --json`; a thread timestamps each message it receives."""

    def __init__(self, ferry, home):
        self.home = home
        self.p = subprocess.Popen([ferry, "--home", home, "daemon", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.cond = threading.Condition()
        self.arrivals = []  # (monotonic time, body), in arrival order
        self.seen = {}  # body -> first arrival time
        self.ready = False
        threading.Thread(target=self.read, daemon=True).start()
        self.wait(lambda: self.ready)
        self.control = Control(home)

    def read(self):
        for line in self.p.stdout:
            now = time.monotonic()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if ev.get("type") == "ready":
                    self.ready = True
                elif ev.get("type") == "message_received":
                    body = ev["message"]["body"]
                    self.arrivals.append((now, body))
                    self.seen.setdefault(body, now)
                self.cond.notify_all()

    def wait(self, pred, timeout=WAIT):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise RuntimeError(f"{self.home}: timed out waiting")

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=30)


def arrived(daemon, body):
    return daemon.seen.get(body)


def ping_pong(alice, bob, n, tag):
    """Alice sends; the time until Bob shows it. One at a time."""
    send_ret, trip = [], []
    for i in range(n):
        body = f"{tag}-{i}"
        t0 = time.monotonic()
        alice.control.call("send", contact="Bob", text=body)
        t1 = time.monotonic()
        bob.wait(lambda: arrived(bob, body) is not None)
        send_ret.append(t1 - t0)
        trip.append(arrived(bob, body) - t0)
    return send_ret, trip


def burst(alice, bob, n, lanes=1):
    """N messages back to back, from `lanes` control connections at once (each its own share,
    in its own order)."""
    start = len(bob.arrivals)
    share = [[f"burst-{lane}-{i}" for i in range(lane, n, lanes)] for lane in range(lanes)]
    bodies = [b for lane in share for b in lane]
    controls = [alice.control] + [Control(alice.home) for _ in range(lanes - 1)]
    failed = []

    def send(control, mine):
        try:
            for b in mine:
                control.call("send", contact="Bob", text=b)
        except Exception as e:  # counted below: the burst is then incomplete
            failed.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=send, args=(c, m)) for c, m in zip(controls, share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    if failed:
        print(f"WARNING: {len(failed)} burst lane(s) failed: {failed[0]}", file=sys.stderr)
    sent = time.monotonic() - t0
    try:
        bob.wait(lambda: len(bob.arrivals) - start >= n, timeout=max(WAIT, n / 5))
        complete = True
    except RuntimeError:
        complete = False
    got = [b for _, b in bob.arrivals[start:]]
    last = bob.arrivals[-1][0] if len(bob.arrivals) > start else t0
    # The last acknowledgement may still be on its way back to Alice: give it a moment, then
    # count what is still waiting (anything left means a message stuck in backoff).
    deadline = time.monotonic() + 10
    while True:
        queued = alice.control.call("outbox")["queued"]
        if queued == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    wanted = set(bodies)
    got = [b for b in got if b in wanted]
    # In order within each lane (the lanes interleave as they like): each lane's arrivals,
    # first copies only, are a prefix of what it sent.
    lane_of = {b: i for i, mine in enumerate(share) for b in mine}
    firsts = [[] for _ in share]
    for b in dict.fromkeys(got):
        firsts[lane_of[b]].append(b)
    in_order = all(f == mine[: len(f)] for f, mine in zip(firsts, share))
    dupes = len(got) - len(set(got))
    return {
        "sent_s": sent,
        "all_s": last - t0,
        "received": len(set(got)),
        "in_order": in_order,
        "dupes": dupes,
        "complete": complete,
        "left_queued": queued,
    }


def backlog(ferry, d, n):
    """Bob away, Alice queues N; then the time from Bob's daemon being ready to the last of
    them stored and shown: delivery between the daemons alone, without the senders' calls."""
    d["Bob"].stop()
    bodies = [f"backlog-{i}" for i in range(n)]
    for b in bodies:
        d["Alice"].control.call("send", contact="Bob", text=b)
    bob = d["Bob"] = Daemon(ferry, d["Bob"].home)
    ready = time.monotonic()
    bob.wait(lambda: len(bob.arrivals) >= n, timeout=max(WAIT, n / 100))
    got = [b for _, b in bob.arrivals if b.startswith("backlog-")]
    return {
        "n": n,
        "all_s": bob.arrivals[-1][0] - ready,
        "complete": set(got) == set(bodies),
        "in_order": got == bodies,
        "dupes": len(got) - len(set(got)),
    }


def flood(carol, stop, lane, counts):
    """One of several senders on Carol's own control connections, as fast as they go."""
    control = Control(carol.home)
    n = 0
    while not stop.is_set():
        control.call("send", contact="Bob", text=f"flood-{lane}-{n}")
        n += 1
    counts[lane] = n


def bench(ferry, floors_bin, args, work):
    names = ["Alice", "Bob", "Carol"]
    homes = {n: os.path.join(work, n.lower()) for n in names}
    for n, h in homes.items():
        run([ferry, "--home", h, "--relay", "disabled", "--bind", "127.0.0.1:0",
             "--local-discovery", "off", "init", "--name", n])
    d = {n: Daemon(ferry, h) for n, h in homes.items()}
    try:
        for a, b in [("Alice", "Bob"), ("Carol", "Bob")]:
            invite = d[b].control.call("invite")["invite"]
            d[a].control.call("pair", invite=invite)
        # Warm up the links.
        ping_pong(d["Alice"], d["Bob"], 10, "warm")
        ping_pong(d["Carol"], d["Bob"], 10, "warm-c")
        idle = {n: d[n].rss_kib() for n in ("Alice", "Bob")}
        floors = json.loads(run([floors_bin, str(max(200, args.pings))]))
        send_ret, quiet = ping_pong(d["Alice"], d["Bob"], args.pings, "ping")
        b = burst(d["Alice"], d["Bob"], args.burst, args.burst_lanes)
        q = backlog(ferry, d, args.burst)
        stop = threading.Event()
        counts = {}
        lanes = [threading.Thread(target=flood, args=(d["Carol"], stop, i, counts))
                 for i in range(args.flood_lanes)]
        for t in lanes:
            t.start()
        # Measure only once Carol's flood is well under way.
        before = len(d["Bob"].arrivals)
        d["Bob"].wait(lambda: len(d["Bob"].arrivals) - before >= 4000)
        flood_start = len(d["Bob"].arrivals)
        t_start = time.monotonic()
        _, noisy = ping_pong(d["Alice"], d["Bob"], args.pings, "fair")
        flood_rate = (len(d["Bob"].arrivals) - flood_start) / (time.monotonic() - t_start)
        stop.set()
        for t in lanes:
            t.join(timeout=WAIT)
        flooded = [sum(counts.values()), flood_rate]
        rss = {n: d[n].rss_kib() for n in names}
        memory = []
        for rnd in range(args.memory_rounds if args.memory else 0):
            m = burst(d["Alice"], d["Bob"], args.memory, args.burst_lanes)
            if not m["complete"] or m["dupes"] or m["left_queued"]:
                raise RuntimeError(f"memory round {rnd + 1}: {m}")
            memory.append({n: d[n].rss_kib() for n in ("Alice", "Bob")})
    finally:
        for x in d.values():
            x.stop()
    return {
        "floors": floors, "send_ret": send_ret, "quiet": quiet, "burst": b,
        "backlog": q, "noisy": noisy, "flooded": flooded[0], "flood_rate": flooded[1], "rss": rss,
        "idle": idle, "memory": memory,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", help="ferry binary (default: build target/release/ferry)")
    ap.add_argument("--floors", help="floors example binary (default: build it)")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--burst-lanes", type=int, default=4,
                    help="Alice's concurrent senders (control connections) for the burst")
    ap.add_argument("--flood-lanes", type=int, default=4,
                    help="Carol's concurrent senders during the fairness row")
    ap.add_argument("--work", help="scratch folder (default: a short temp folder)")
    ap.add_argument("--memory", type=int, default=0,
                    help="after the other rows, send this many messages in rounds and show the RSS")
    ap.add_argument("--memory-rounds", type=int, default=2,
                    help="how many rounds of --memory messages (at least 2)")
    args = ap.parse_args()
    isolate()
    if not args.ferry or not args.floors:
        meta = json.loads(subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"], cwd=ROOT))
        release = os.path.join(meta["target_directory"], "release")
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "ferry-cli",
                               "--bin", "ferry"], cwd=ROOT)
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "ferry-core",
                               "--example", "floors"], cwd=ROOT)
        args.ferry = args.ferry or os.path.join(release, "ferry")
        args.floors = args.floors or os.path.join(release, "examples", "floors")

    results = []
    for i in range(args.runs):
        # Short, so the control socket path fits a Unix socket address.
        work = args.work or tempfile.mkdtemp(prefix="fb-", dir="/tmp")
        try:
            results.append(bench(args.ferry, args.floors, args, work))
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.runs} run(s); {args.pings} pings, a burst of {args.burst}, 100-byte-ish "
          "texts; times in ms as p50 / p99 / max\n")
    print("| run | send returns | send → shown by peer | burst: all arrived | burst msg/s "
          "| received / in order / dupes / left queued | backlog: delivered after Bob is back "
          "| send → shown while Carol floods "
          "| floors: fsync · sled insert+flush · iroh echo (p50 / p99) |")
    print("| --- | --- | --- | ---: | ---: | --- | --- | --- | --- |")
    for i, r in enumerate(results, 1):
        b, f, q = r["burst"], r["floors"], r["backlog"]
        fl = " · ".join(f"{f[k]['p50']:.2f} / {f[k]['p99']:.2f}"
                        for k in ("fsync_ms", "sled_insert_flush_ms", "iroh_echo_ms"))
        rate = b["received"] / b["all_s"] if b["all_s"] > 0 else 0
        print(f"| {i} | {ms3(r['send_ret'])} | {ms3(r['quiet'])} | {b['all_s']:.2f} s "
              f"| {rate:,.0f} | {b['received']} / {'yes' if b['in_order'] else 'NO'} / "
              f"{b['dupes']} / {b['left_queued']} "
              f"| {q['all_s']:.2f} s, {q['n'] / q['all_s']:,.0f} msg/s, "
              f"{'whole' if q['complete'] else 'INCOMPLETE'}, "
              f"{'in order' if q['in_order'] else 'OUT OF ORDER'}, {q['dupes']} dupes "
              f"| {ms3(r['noisy'])} "
              f"(Bob took {r['flood_rate']:,.0f}/s from Carol) | {fl} |")
    if len(results) > 1:
        p50s = [pct(r["quiet"], 0.5) * 1e3 for r in results]
        print(f"\nsend → shown p50 over runs: median {statistics.median(p50s):.2f} ms, "
              f"spread {min(p50s):.2f}–{max(p50s):.2f} ms")
    r = results[-1]
    print(f"\nRSS after the run (KiB): " + ", ".join(f"{k} {v:,}" for k, v in r["rss"].items()))
    if args.memory:
        mib = lambda kib: f"{kib / 1024:.1f}"
        n = args.memory_rounds
        print(f"\nRSS in MiB (Alice / Bob): idle after pairing, then after each round of "
              f"{args.memory:,} more messages\n")
        print(f"| run | idle | " + " | ".join(f"after {k * args.memory:,}" for k in range(1, n + 1))
              + " | growth in the last round |")
        print("| --- |" + " ---: |" * (n + 2))
        for i, r in enumerate(results, 1):
            idle, rounds = r["idle"], r["memory"]
            cols = [f"{mib(x['Alice'])} / {mib(x['Bob'])}" for x in [idle, *rounds]]
            one, two = rounds[-2], rounds[-1]
            growth = f"{mib(two['Alice'] - one['Alice'])} / {mib(two['Bob'] - one['Bob'])}"
            print(f"| {i} | {' | '.join(cols)} | {growth} |")
    lost = [r for r in results if not r["burst"]["complete"] or r["burst"]["dupes"]
            or not r["backlog"]["complete"] or r["backlog"]["dupes"]]
    if lost:
        print("\nWARNING: a burst was incomplete or duplicated", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
