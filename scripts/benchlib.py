"""What the benchmark scripts share."""
import os
import subprocess
import sys


def isolate():
    """Re-runs the calling script in a new network namespace with only loopback up, so no
    traffic can leave the machine. Needs root (or unprivileged user namespaces)."""
    if os.environ.get("FERRY_BENCH_ISOLATED") == "1":
        return
    env = dict(os.environ, FERRY_BENCH_ISOLATED="1")
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))
