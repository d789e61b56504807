#!/usr/bin/env python3
"""Idle memory and cold start of the Ferry desktop app, side by side with a bare Tauri hello-world.

Usage:
  python3 scripts/measure_app.py --ferry target/release/ferry-app \\
      --hello target/hello/release/hello-tauri --ferry-cli target/release/ferry \\
      [--runs 3] [--idle 10] [--warmup 1] [--no-paint] [--no-dbus] [--no-netns] [--keep]

For each app, --warmup + --runs times (warm-up runs are not counted), each run on its own:
  * a fresh Xvfb (display picked by Xvfb itself with -displayfd), no window manager;
  * a fresh temporary HOME and XDG_{CONFIG,DATA,CACHE,STATE,RUNTIME} folders and a clean
    environment (only PATH, LANG/LC_* and any WEBKIT_*/GDK_*/GTK_*/LIBGL_*/MESA_* variables
    of the caller are passed on);
  * a private session bus (dbus-daemon --session, as on a desktop; not counted), unless --no-dbus;
  * for Ferry, FERRY_HOME=<tmp>/ferry-home made beforehand with
    `ferry --home <tmp>/ferry-home init --name Measure --relay disabled`, so the app opens
    straight to its ready state (it serves <home>/control.sock once the home is open).
It measures
  * start -> window: from spawn until a top-level X window of the app (_NET_WM_PID = the app's pid,
    or failing that the expected title) is mapped and viewable (polled with `xwininfo`);
  * start -> first paint: until that window's pixels are no longer one uniform colour
    (polled with `xwd`), i.e. the web page has drawn something; skipped with --no-paint;
  * after --idle seconds more: the sum of PSS (and RSS) from /proc/<pid>/smaps_rollup over the
    app process and all its descendants (WebKitWebProcess, WebKitNetworkProcess, ...), and
    the process count; then the process group is sent SIGTERM (SIGKILL after 5 s).
Everything runs inside a private network namespace (the script re-executes itself under
`unshare -n` with only loopback up) unless --no-netns, so nothing can reach the internet.
Needs: Xvfb (Debian package xvfb), xwininfo + xprop (x11-utils), xwd (x11-apps, only for the
paint column), dbus-daemon (dbus-daemon, unless --no-dbus), unshare (util-linux) and ip (iproute2)
for the namespace. Python stdlib only; run it as root (or where `unshare -n` is allowed).
"""
import argparse
import ctypes
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

POLL = 0.01  # seconds between window polls
PAINT_POLL = 0.05  # seconds between screenshots while waiting for the first paint
TIMEOUT = 60.0  # seconds to wait for a window or a paint before giving up on a run
PASS_ENV_PREFIXES = ("WEBKIT_", "GDK_", "GTK_", "LIBGL_", "MESA_", "GALLIUM_", "LC_")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup checks and isolation


def check_tools(args):
    """Exits with a clear message if a needed program is missing."""
    need = {"Xvfb": "xvfb", "xwininfo": "x11-utils", "xprop": "x11-utils"}
    if not args.no_paint:
        need["xwd"] = "x11-apps"
    if not args.no_dbus:
        need["dbus-daemon"] = "dbus-daemon"
    if not args.no_netns:
        need["unshare"] = "util-linux"
        need["ip"] = "iproute2"
    missing = {tool: pkg for tool, pkg in need.items() if shutil.which(tool) is None}
    for path, what in [(args.ferry, "--ferry"), (args.hello, "--hello"), (args.ferry_cli, "--ferry-cli")]:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.exit(f"measure_app: {what} {path}: not an executable file")
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        hint = []
        if "xwd" in missing:
            hint.append("or pass --no-paint to skip the first-paint column")
        if "dbus-daemon" in missing:
            hint.append("or pass --no-dbus to run the apps without a session bus")
        if "unshare" in missing or "ip" in missing:
            hint.append("or pass --no-netns to run without a private network namespace")
        sys.exit(
            "measure_app: missing " + ", ".join(sorted(missing)) + f"\n  install: apt-get install -y {pkgs}"
            + "".join(f"\n  {h}" for h in hint)
        )


def isolate(args):
    """Re-runs this script in a new network namespace with only loopback up."""
    if args.no_netns or os.environ.get("FERRY_MEASURE_ISOLATED") == "1":
        return
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        sys.exit("measure_app: `unshare -n` is not permitted here (needs root or user namespaces);"
                 " pass --no-netns to measure without network isolation")
    env = dict(os.environ, FERRY_MEASURE_ISOLATED="1")
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    sys.exit(subprocess.call(cmd, env=env))


def become_subreaper():
    """Orphans below this process (helpers that double-forked away from their parent) are
    re-parented to it instead of init, so they stay visible and can be killed. The setting
    survives execve, so it also serves as a preexec_fn for the session bus."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


# ---------------------------------------------------------------- /proc


def proc_table():
    """{pid: ppid} for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        rest = stat[stat.rfind(")") + 2:].split()
        if rest[0] == "Z":
            continue  # zombies hold no memory
        table[int(name)] = int(rest[1])
    return table


def descendants(root, table):
    """root and every process below it."""
    children = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def proc_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return "?"


def rollup(pid):
    """(Pss, Rss) in KiB from /proc/<pid>/smaps_rollup, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Pss:", "Rss:"):
            vals[parts[0][:-1]] = int(parts[1])
    return vals.get("Pss", 0), vals.get("Rss", 0)


# ---------------------------------------------------------------- X


def start_xvfb(workdir):
    """Starts Xvfb on a display it picks itself; returns (process, ':N')."""
    r, w = os.pipe()
    logf = open(os.path.join(workdir, "xvfb.log"), "wb")
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "1920x1080x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    os.close(w)
    buf = b""
    deadline = time.monotonic() + 20
    os.set_blocking(r, False)
    while not buf.endswith(b"\n"):
        if xvfb.poll() is not None or time.monotonic() > deadline:
            xvfb.kill()
            sys.exit(f"measure_app: Xvfb did not start; see {logf.name}")
        try:
            chunk = os.read(r, 64)
            if chunk:
                buf += chunk
                continue
        except BlockingIOError:
            pass
        time.sleep(0.01)
    os.close(r)
    return xvfb, ":" + buf.decode().strip()


def start_dbus(workdir, env):
    """Starts a private session bus (as a desktop has one); returns (process, address)."""
    logf = open(os.path.join(workdir, "dbus.log"), "wb")
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                           env=env, start_new_session=True,
                           # services it starts on demand (portals, the accessibility bus)
                           # stay below it, apart from the app's tree
                           preexec_fn=become_subreaper)
    address = bus.stdout.readline().decode().strip()
    if not address:
        stop(bus)
        sys.exit(f"measure_app: dbus-daemon did not start; see {logf.name} (or pass --no-dbus)")
    return bus, address


def stop(proc, sig=signal.SIGTERM, grace=5.0):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


CHILD_RE = re.compile(r"^\s+(0x[0-9a-f]+) (.*?)\s+(\d+)x(\d+)\+(-?\d+)\+(-?\d+)\s+\+-?\d+\+-?\d+\s*$")


def toplevels(display):
    """[(window id, title or None, width, height)] of the root window's children."""
    out = subprocess.run(["xwininfo", "-display", display, "-root", "-children"],
                         capture_output=True, text=True).stdout
    wins = []
    for line in out.splitlines():
        m = CHILD_RE.match(line)
        if not m:
            continue
        wid, label, w, h = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        t = re.match(r'^"(.*)":', label)
        wins.append((wid, t.group(1) if t else None, w, h))
    return wins


def window_pid(display, wid):
    out = subprocess.run(["xprop", "-display", display, "-id", wid, "_NET_WM_PID"],
                         capture_output=True, text=True).stdout
    m = re.search(r"=\s*(\d+)", out)
    return int(m.group(1)) if m else None


def viewable(display, wid):
    out = subprocess.run(["xwininfo", "-display", display, "-id", wid],
                         capture_output=True, text=True).stdout
    return "Map State: IsViewable" in out


def uniform(display, wid):
    """True if the window's pixels are all one colour (nothing drawn yet), None on error."""
    res = subprocess.run(["xwd", "-display", display, "-id", wid, "-silent"], capture_output=True)
    data = res.stdout
    if res.returncode != 0 or len(data) < 100:
        return None
    header_size = struct.unpack(">I", data[0:4])[0]
    fields = struct.unpack(">25I", data[0:100])
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    height, width = fields[5], fields[4]
    pixels = data[header_size + 12 * ncolors:]
    bpp = bits_per_pixel // 8
    if bpp == 0 or len(pixels) < bytes_per_line * height:
        return None
    row = pixels[:bpp] * width
    for y in range(height):
        if pixels[y * bytes_per_line: y * bytes_per_line + width * bpp] != row:
            return False
    return True


# ---------------------------------------------------------------- one run


def ferry_init(cli, home):
    res = subprocess.run([cli, "--home", home, "init", "--name", "Measure", "--relay", "disabled"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        sys.exit(f"measure_app: `ferry init` failed:\n{res.stderr}")


def clean_env(tmp, display):
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LANGUAGE") or k.startswith(PASS_ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    user = os.path.join(tmp, "user")
    dirs = {
        "HOME": user,
        "XDG_CONFIG_HOME": os.path.join(user, ".config"),
        "XDG_DATA_HOME": os.path.join(user, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(user, ".cache"),
        "XDG_STATE_HOME": os.path.join(user, ".local", "state"),
        "XDG_RUNTIME_DIR": os.path.join(tmp, "run"),
    }
    for d in dirs.values():
        os.makedirs(d, mode=0o700, exist_ok=True)
    env.update(dirs)
    env["DISPLAY"] = display
    return env


def measure_once(app, args):
    tmp = tempfile.mkdtemp(prefix="ferry-measure-")
    xvfb = proc = bus = None
    result = {"ok": False}
    try:
        xvfb, display = start_xvfb(tmp)
        env = clean_env(tmp, display)
        if not args.no_dbus:
            bus, env["DBUS_SESSION_BUS_ADDRESS"] = start_dbus(tmp, env)
        ready_file = None
        if app["ferry"]:
            home = os.path.join(tmp, "ferry-home")
            ferry_init(args.ferry_cli, home)
            env["FERRY_HOME"] = home
            ready_file = os.path.join(home, "control.sock")
        applog = open(os.path.join(tmp, "app.log"), "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen([app["bin"]], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                stdout=applog, stderr=applog, start_new_session=True)

        def ms():
            return (time.monotonic() - t0) * 1000.0

        def note_ready():
            if ready_file and "ready_ms" not in result and os.path.exists(ready_file):
                result["ready_ms"] = ms()

        # 1. first mapped top-level window of the app
        known = {}  # window id -> pid (or None)
        wid = None
        while wid is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{app['name']} exited with {proc.returncode} before showing a window"
                                   " (--keep keeps its log); log tail: " + tail(os.path.join(tmp, "app.log")))
            if ms() > TIMEOUT * 1000:
                raise RuntimeError(f"no window within {TIMEOUT:.0f} s")
            for w, title, width, height in toplevels(display):
                if width <= 1 or height <= 1:
                    continue
                if w not in known:
                    known[w] = window_pid(display, w)
                pid = known[w]
                if pid is None and title != app["title"]:
                    continue
                if pid is not None and pid != proc.pid:
                    continue
                if viewable(display, w):
                    wid = w
                    break
            else:
                note_ready()
                time.sleep(POLL)
        result["window_ms"] = ms()
        result["window_id"] = wid
        note_ready()

        # 2. first paint: the window is no longer one flat colour
        if not args.no_paint:
            while True:
                u = uniform(display, wid)
                if u is False:
                    result["paint_ms"] = ms()
                    break
                if ms() > TIMEOUT * 1000 or proc.poll() is not None:
                    break
                note_ready()
                time.sleep(PAINT_POLL)

        # 3. idle, then memory of the whole process tree
        end = time.monotonic() + args.idle
        while time.monotonic() < end:
            note_ready()
            time.sleep(0.05)
        note_ready()
        if proc.poll() is not None:
            raise RuntimeError(f"{app['name']} exited with {proc.returncode} while idle; log tail: "
                               + tail(os.path.join(tmp, "app.log")))
        table = proc_table()
        pids = descendants(proc.pid, table)
        me = os.getpid()
        # helpers that double-forked away from the app were re-parented to us (subreaper)
        ours = {proc.pid, xvfb.pid} | ({bus.pid} if bus else set())
        orphans = [p for p, pp in table.items() if pp == me and p not in ours]
        for p in orphans:
            pids.extend(descendants(p, table))
        per = []
        for p in pids:
            r = rollup(p)
            if r is not None:
                per.append((proc_name(p), p, r[0], r[1]))
        result["procs"] = per
        result["pss_kib"] = sum(x[2] for x in per)
        result["rss_kib"] = sum(x[3] for x in per)
        result["orphans"] = len(orphans)
        if ready_file:
            result["ready"] = os.path.exists(ready_file)
        result["ok"] = True
        result["pids"] = pids
    except RuntimeError as e:
        result["error"] = str(e)
    finally:
        leftovers = result.get("pids", [])
        if proc is not None:
            stop(proc)
        for p in leftovers:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if bus is not None:
            services = [p for p in descendants(bus.pid, proc_table()) if p != bus.pid]
            result["bus_services"] = sorted({proc_name(p) for p in services})
            stop(bus)
            end_processes(services)
        reap()
        if xvfb is not None:
            stop(xvfb)
        unmount_below(tmp)  # xdg-document-portal's FUSE mount at <tmp>/run/doc, if it left one
        if args.keep:
            log(f"  kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def end_processes(pids, grace=3.0):
    """SIGTERM (so e.g. xdg-document-portal unmounts its FUSE folder), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            reap()
            alive = proc_table()
            if not any(p in alive for p in pids):
                return
            time.sleep(0.05)


def unmount_below(folder):
    """Lazily unmounts anything still mounted below folder, deepest first."""
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
    except OSError:
        return
    prefix = folder.rstrip("/") + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        if subprocess.run(["umount", "-l", point], capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)


def reap():
    """Collects exited orphans that were re-parented to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def tail(path, n=600):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- report


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts(args):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    webkit = sh(["dpkg-query", "-W", "-f", "${Version}", "libwebkit2gtk-4.1-0"]) or "unknown"
    gtk = sh(["dpkg-query", "-W", "-f", "${Version}", "libgtk-3-0"]) or "unknown"
    xvfb = sh(["dpkg-query", "-W", "-f", "${Version}", "xvfb"]) or "unknown"
    facts = [
        ("cores", f"{os.cpu_count()}" + (f" ({model})" if model else "")),
        ("memory", mem),
        ("kernel", platform.release()),
        ("WebKitGTK (libwebkit2gtk-4.1-0)", webkit),
        ("GTK 3 (libgtk-3-0)", gtk),
        ("Xvfb", xvfb + ", 1920x1080x24, no window manager"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("session bus", "none (--no-dbus)" if args.no_dbus else
         "a private dbus-daemon per run; it and the services it starts are not counted"),
        ("network", "private namespace, loopback only" if not args.no_netns else "host network (--no-netns)"),
    ]
    passed = sorted(k for k in os.environ if k.startswith(PASS_ENV_PREFIXES) and not k.startswith("LC_"))
    if passed:
        facts.append(("passed to the apps", ", ".join(f"{k}={os.environ[k]}" for k in passed)))
    for label, path in [("ferry-app", args.ferry), ("hello-tauri", args.hello)]:
        facts.append((label, f"{path} ({os.path.getsize(path) / 1048576:.1f} MiB)"))
    return facts


def med_range(values, fmt="{:.0f}"):
    if not values:
        return "n/a"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(apps, results, args, facts):
    print()
    print("### Ferry desktop vs bare Tauri: idle memory and start to first window")
    print()
    after = "the window was mapped" if args.no_paint else "the first paint"
    print(f"{args.runs} run(s) per app after {args.warmup} uncounted warm-up run(s); memory read {args.idle:g} s"
          f" after {after}; PSS and RSS summed over the app and all its descendant processes.")
    print()
    print("| app | start to window (median, min–max ms) | start to first paint (median, min–max ms)"
          " | idle PSS (median MiB) | idle RSS (median MiB) | processes |")
    print("|---|---|---|---|---|---|")
    for app in apps:
        ok = [r for r in results[app["name"]] if r["ok"]]
        win = [r["window_ms"] for r in ok]
        paint = [r["paint_ms"] for r in ok if "paint_ms" in r]
        pss = [r["pss_kib"] / 1024 for r in ok]
        rss = [r["rss_kib"] / 1024 for r in ok]
        nprocs = sorted({len(r["procs"]) for r in ok})
        failed = len(results[app["name"]]) - len(ok)
        name = app["name"] + (f" ({failed} run(s) failed)" if failed else "")
        paint_s = med_range(paint) if not args.no_paint else "skipped"
        print(f"| {name} | {med_range(win)} | {paint_s} | "
              f"{statistics.median(pss):.1f} | {statistics.median(rss):.1f} | "
              f"{'/'.join(map(str, nprocs)) or 'n/a'} |" if ok else
              f"| {name} | n/a | n/a | n/a | n/a | n/a |")
    print()
    print("Idle PSS by process (median over runs, MiB):")
    print()
    print("| app | process | PSS | RSS |")
    print("|---|---|---|---|")
    for app in apps:
        ok = [r for r in results[app["name"]] if r["ok"]]
        names = []
        for r in ok:
            for n, *_ in r["procs"]:
                if n not in names:
                    names.append(n)
        for n in names:
            pss = [sum(x[2] for x in r["procs"] if x[0] == n) / 1024 for r in ok]
            rss = [sum(x[3] for x in r["procs"] if x[0] == n) / 1024 for r in ok]
            count = max(sum(1 for x in r["procs"] if x[0] == n) for r in ok)
            label = n + (f" ×{count}" if count > 1 else "")
            print(f"| {app['name']} | {label} | {statistics.median(pss):.1f} | {statistics.median(rss):.1f} |")
    services = sorted({n for rs in results.values() for r in rs for n in r.get("bus_services", [])})
    if services:
        print()
        print("Started by the session bus for the apps (shared desktop services, not counted): "
              + ", ".join(services) + ".")
    print()
    print("Machine:")
    print()
    for k, v in facts + [("load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg()))]:
        print(f"- {k}: {v}")
    notes = []
    for app in apps:
        for i, r in enumerate(results[app["name"]], 1):
            if not r["ok"]:
                notes.append(f"{app['name']} run {i} failed: {r.get('error')}")
            else:
                if not args.no_paint and "paint_ms" not in r:
                    notes.append(f"{app['name']} run {i}: the window stayed one flat colour for {TIMEOUT:.0f} s")
                if app["ferry"] and not r.get("ready"):
                    notes.append(f"{app['name']} run {i}: the home was not open (no control.sock) at measuring time")
                if r.get("orphans"):
                    notes.append(f"{app['name']} run {i}: {r['orphans']} process(es) had left the app's tree and were counted")
    if notes:
        print()
        for n in notes:
            print(f"- note: {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ferry", required=True, help="the ferry-app binary")
    ap.add_argument("--hello", required=True, help="the hello-tauri binary (scripts/hello-tauri)")
    ap.add_argument("--ferry-cli", required=True, help="the ferry CLI binary (for `ferry init`)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per app (default 3)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before memory is read (default 10)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="uncounted runs per app first, to warm the page cache (default 1)")
    ap.add_argument("--no-paint", action="store_true", help="skip the first-paint measurement (no xwd needed)")
    ap.add_argument("--no-dbus", action="store_true",
                    help="no private session bus for the apps (by default each run gets its own dbus-daemon)")
    ap.add_argument("--no-netns", action="store_true", help="do not run inside `unshare -n`")
    ap.add_argument("--keep", action="store_true", help="keep each run's temporary folder (logs)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    args.ferry, args.hello, args.ferry_cli = (os.path.abspath(p) for p in (args.ferry, args.hello, args.ferry_cli))

    check_tools(args)
    isolate(args)
    if not become_subreaper():
        log("measure_app: could not become a child subreaper; helpers that leave the app's tree are not counted")
    facts = machine_facts(args)

    apps = [
        {"name": "Ferry", "bin": args.ferry, "title": "Ferry", "ferry": True},
        {"name": "hello-tauri", "bin": args.hello, "title": "Hello", "ferry": False},
    ]
    results = {a["name"]: [] for a in apps}
    # interleave the apps so drifting machine load hits both alike
    for i in range(args.warmup + args.runs):
        for app in apps:
            warm = i < args.warmup
            r = measure_once(app, args)
            tag = "warm-up" if warm else f"run {i - args.warmup + 1}/{args.runs}"
            if r["ok"]:
                paint = f", paint {r['paint_ms']:.0f} ms" if "paint_ms" in r else ""
                ready = f", home open {r['ready_ms']:.0f} ms" if "ready_ms" in r else ""
                log(f"{app['name']:12} {tag:9}: window {r['window_ms']:.0f} ms{paint}{ready}, "
                    f"PSS {r['pss_kib'] / 1024:.1f} MiB, RSS {r['rss_kib'] / 1024:.1f} MiB, "
                    f"{len(r['procs'])} processes")
            else:
                log(f"{app['name']:12} {tag:9}: FAILED: {r['error']}")
            if not warm:
                results[app["name"]].append(r)
    report(apps, results, args, facts)
    if any(not r["ok"] for rs in results.values() for r in rs):
        sys.exit(1)


if __name__ == "__main__":
    main()
