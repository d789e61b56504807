#!/usr/bin/env python3
"""Transfer benchmark: Ferry vs sendme vs raw TCP, one file over loopback, side by side.

Usage:  python3 scripts/bench_transfer.py [--sizes 256M,2G] [--runs 1] [--ferry PATH] [--sendme PATH]

Everything runs inside a private network namespace (`unshare -n`, loopback only), so no
traffic can leave the machine. Needs root (or unprivileged user namespaces) for unshare.
Ferry is built in release mode unless --ferry names a binary; sendme comes from
`cargo install sendme`. For each size it prints throughput (payload MiB/s) two ways:

- what a user waits for: from the user's action (`ferry send-file` called, or `sendme send`
  started) to the verified file in place, so the sender's hashing counts for both tools;
- the fetch alone: from the receiver starting to fetch to the file in place;

with the best and the spread of the runs, and each side's peak resident memory.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import isolate

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
    return int(s[:-1] if s[-1] in "KMG" else s) * mult


def human(n):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def generate(path, size):
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        written = 0
        i = 0
        while written < size:
            # vary each MiB so nothing deduplicates
            block = (i.to_bytes(8, "little") + chunk[8:])[: min(1 << 20, size - written)]
            f.write(block)
            written += len(block)
            i += 1


class PeakMem:
    """Polls /proc/PID/status VmHWM (monotonic) until stopped or the process ends."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.05)

    def done(self):
        self.stop = True
        self.t.join()
        return self.peak


def same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


# ---------------------------------------------------------------- raw TCP (the ceiling)
def bench_tcp(src, work):
    out = os.path.join(work, "tcp.out")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    recv_code = (
        "import socket,sys\n"
        "s=socket.create_connection(('127.0.0.1',%d))\n"
        "buf=bytearray(1<<22)\n"
        "with open(sys.argv[1],'wb') as f:\n"
        "    while True:\n"
        "        n=s.recv_into(buf)\n"
        "        if not n: break\n"
        "        f.write(memoryview(buf)[:n])\n" % port
    )
    t0 = time.monotonic()
    recv = subprocess.Popen([sys.executable, "-c", recv_code, out])
    rmem = PeakMem(recv.pid)
    conn, _ = srv.accept()
    with open(src, "rb") as f:
        conn.sendfile(f)
    conn.close()
    recv.wait()
    dt = time.monotonic() - t0
    srv.close()
    ok = same_file(src, out)
    os.remove(out)
    # The sender is this Python process (sendfile, zero-copy); its memory is not comparable.
    return dt, dt, None, rmem.done(), ok


# ---------------------------------------------------------------- sendme
def bench_sendme(sendme, src, work):
    recv_dir = os.path.join(work, "sendme-recv")
    os.makedirs(recv_dir, exist_ok=True)
    start = time.monotonic()
    send = subprocess.Popen(
        [sendme, "send", "--relay", "disabled", "--ticket-type", "addresses",
         "--magic-ipv4-addr", "127.0.0.1:0", "--no-progress", src],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    smem = PeakMem(send.pid)
    ticket = None
    deadline = time.monotonic() + 600
    while ticket is None and time.monotonic() < deadline:
        line = send.stdout.readline()
        if not line:
            break
        for word in line.split():
            if word.startswith("blob"):
                ticket = word
    if ticket is None:
        send.kill()
        raise RuntimeError("sendme printed no ticket")
    t0 = time.monotonic()
    recv = subprocess.Popen([sendme, "receive", "--no-progress", ticket], cwd=recv_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rmem = PeakMem(recv.pid)
    recv.wait(timeout=3600)
    end = time.monotonic()
    dt = end - t0
    r_peak = rmem.done()
    send.kill()
    send.wait()
    s_peak = smem.done()
    out = os.path.join(recv_dir, os.path.basename(src))
    ok = recv.returncode == 0 and os.path.exists(out) and same_file(src, out)
    shutil.rmtree(recv_dir, ignore_errors=True)
    return dt, end - start, s_peak, r_peak, ok


# ---------------------------------------------------------------- Ferry
class Daemon:
    def __init__(self, ferry, home, *extra):
        self.p = subprocess.Popen([ferry, "--home", home, "daemon", "--json", *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.mem = PeakMem(self.p.pid)
        self.wait(lambda e: e.get("type") == "ready", 60)

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if pred(ev):
                return ev
        raise RuntimeError("ferry daemon: expected event did not come")

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=30)
        return self.mem.done()


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout.strip()


def bench_ferry(ferry, src, work):
    homes = [os.path.join(work, n) for n in ("ferry-alice", "ferry-bob")]
    for h, name in zip(homes, ("Alice", "Bob")):
        shutil.rmtree(h, ignore_errors=True)
        run([ferry, "--home", h, "--relay", "disabled", "--bind", "127.0.0.1:0",
             "--local-discovery", "off", "init", "--name", name])
    downloads = os.path.join(work, "ferry-downloads")
    alice = Daemon(ferry, homes[0])
    bob = Daemon(ferry, homes[1], "--accept-files", "--downloads", downloads)
    try:
        run([ferry, "--home", homes[1], "pair", run([ferry, "--home", homes[0], "invite"])])
        start = time.monotonic()
        run([ferry, "--home", homes[0], "send-file", "Bob", src])  # imports (hashes) the file
        bob.wait(lambda e: e.get("type") == "transfer_changed"
                 and e["transfer"]["state"] == "transferring", 600)
        t0 = time.monotonic()
        done = bob.wait(lambda e: e.get("type") == "transfer_completed", 3600)
        end = time.monotonic()
        dt, whole = end - t0, end - start
        ok = same_file(src, done["path"])
    finally:
        s_peak, r_peak = alice.stop(), bob.stop()
    shutil.rmtree(downloads, ignore_errors=True)
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)
    return dt, whole, s_peak, r_peak, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256M,2G")
    ap.add_argument("--runs", type=int, default=1, help="runs per tool and size; the best is shown")
    ap.add_argument("--ferry", help="ferry binary (default: build target/release/ferry)")
    ap.add_argument("--sendme", default=shutil.which("sendme") or os.path.expanduser("~/.cargo/bin/sendme"))
    ap.add_argument("--work", help="scratch folder (default: a temp folder)")
    args = ap.parse_args()
    isolate()

    ferry = args.ferry
    if not ferry:
        # Ask cargo where it builds (absolute, whatever CARGO_TARGET_DIR or config say).
        meta = json.loads(subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"], cwd=ROOT))
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "ferry-cli"], cwd=ROOT)
        ferry = os.path.join(meta["target_directory"], "release", "ferry")
    tools = [("raw TCP (ceiling)", lambda s, w: bench_tcp(s, w))]
    if args.sendme and os.path.exists(args.sendme):
        tools.append(("sendme " + run([args.sendme, "--version"]).split()[-1], lambda s, w: bench_sendme(args.sendme, s, w)))
    else:
        print("sendme not found: `cargo install sendme` to include it", file=sys.stderr)
    tools.append(("ferry", lambda s, w: bench_ferry(ferry, s, w)))

    work = args.work or tempfile.mkdtemp(prefix="ferry-bench-")
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        src = os.path.join(work, f"payload-{size}.bin")
        generate(src, size)
        for name, fn in tools:
            runs = [fn(src, work) for _ in range(args.runs)]
            rate = lambda t: size / t / (1 << 20)
            wholes = [rate(r[1]) for r in runs]
            fetches = [rate(r[0]) for r in runs]
            sp = max((r[2] for r in runs if r[2]), default=None)
            rp = max(r[3] for r in runs)
            ok = all(r[4] for r in runs)
            rows.append((human(size), name, wholes, fetches, sp, rp, ok))
            print(f"  {human(size):>9}  {name:<20} {max(wholes):8.1f} MiB/s "
                  f"(fetch alone {max(fetches):.1f})", file=sys.stderr)
        os.remove(src)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)

    spread = lambda v: f"{max(v):8.1f} ({min(v):.0f}–{max(v):.0f})"
    print(f"\n{args.runs} run(s) per tool and size; MiB/s as best (slowest–fastest)\n")
    print(f"{'size':>9} | {'tool':<20} | {'action → file in place':>24} | {'fetch alone':>24} "
          f"| {'sender peak':>11} | {'receiver peak':>13} | ok")
    print(f"{'-' * 9}-|-{'-' * 20}-|-{'-' * 24}-|-{'-' * 24}-|-{'-' * 11}-|-{'-' * 13}-|---")
    for size, name, wholes, fetches, sp, rp, ok in rows:
        sp = human(sp) if sp else "n/a"
        print(f"{size:>9} | {name:<20} | {spread(wholes):>24} | {spread(fetches):>24} "
              f"| {sp:>11} | {human(rp):>13} | {'yes' if ok else 'NO'}")
    by = {}
    for size, name, wholes, fetches, *_ in rows:
        by.setdefault(size, {})[name.split()[0]] = (max(wholes), max(fetches))
    for size, r in by.items():
        if "ferry" in r and "sendme" in r:
            (fw, ff), (sw, sf) = r["ferry"], r["sendme"]
            print(f"{size}: ferry / sendme = {fw / sw:.2f}x as a user waits, "
                  f"{ff / sf:.2f}x the fetch alone (best runs)")


if __name__ == "__main__":
    main()
