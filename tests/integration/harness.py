"""Integration-test harness: starts real `shoal agent` processes on 127.0.0.1.

Each test gets its own port range and temporary data directories, and stops
only the processes it started, by pid. Waits poll with a deadline; nothing
here sleeps for a fixed time to "let things settle" except where a test needs
time to pass (a pause, a partition).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

SHOAL = os.environ.get("SHOAL_BIN", "shoal")


def keygen():
    return subprocess.run([SHOAL, "keygen"], check=True, capture_output=True, text=True).stdout.strip()


class Agent:
    def __init__(self, cluster, index, name, dc, gossip_port, admin_port, key_file, data_dir, extra):
        self.cluster = cluster
        self.index = index
        self.name = name
        self.dc = dc
        self.gossip_port = gossip_port
        self.admin_port = admin_port
        self.key_file = key_file
        self.data_dir = data_dir
        self.extra = list(extra)
        self.host = "127.0.0.1"
        self.proc = None
        self.log_path = os.path.join(cluster.root, f"{name}.log")

    @property
    def addr(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.gossip_port}"

    @property
    def admin(self):
        return f"127.0.0.1:{self.admin_port}"

    def command(self, join=()):
        cmd = [SHOAL, "agent", "--name", self.name, "--dc", self.dc, "--data-dir", self.data_dir,
               "--bind", self.addr, "--admin", self.admin, "--cluster-key-file", self.key_file]
        for j in join:
            cmd += ["--join", j]
        return cmd + self.extra

    def start(self, join=()):
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(join), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.cluster.wait_for(lambda: self.admin_ready(), 15, f"{self.name} admin API up")

    def admin_ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            self.http("GET", "/v1/self")
            return True
        except OSError:
            return False

    def http(self, method, path, body=None, timeout=5):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.admin}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def cli(self, *args, check=True):
        r = subprocess.run([SHOAL, *args, "--admin", self.admin], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def members(self):
        """Member list through the CLI's --json output: {name: member}."""
        out = self.cli("members", "--json").stdout
        return {m["name"]: m for m in json.loads(out)}

    def status_of(self, name):
        m = self.members().get(name)
        return None if m is None else m["status"]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.running(), f"{self.name} is not running"
        os.kill(self.proc.pid, sig)

    def kill9(self):
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout=10):
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        return self.proc.returncode if self.proc else None

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


class Cluster:
    """A set of agents sharing a cluster key, on ports port_base, port_base+2, ..."""

    def __init__(self, port_base, profile="lan", extra=()):
        self.root = tempfile.mkdtemp(prefix="shoal-it-")
        self.port_base = port_base
        self.profile = profile
        self.extra = list(extra)
        self.agents = []
        self.key_file = self.write_key_file("cluster.key", keygen())

    def write_key_file(self, name, key, mode=0o600):
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(key + "\n")
        os.chmod(path, mode)
        return path

    def add(self, name=None, dc=None, key_file=None, extra=()):
        i = len(self.agents)
        agent = Agent(self, i, name or f"node-{i}", dc or f"dc{i % 3 + 1}", self.port_base + 2 * i,
                      self.port_base + 2 * i + 1, key_file or self.key_file,
                      os.path.join(self.root, f"data-{i}"), ["--profile", self.profile, *self.extra, *extra])
        self.agents.append(agent)
        return agent

    def start(self, n, **kw):
        first = self.add(**kw)
        first.start()
        for _ in range(n - 1):
            self.add(**kw).start(join=[first.addr])
        return list(self.agents)  # A copy: agents added later must not appear in it.

    def live(self):
        return [a for a in self.agents if a.running()]

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return time.monotonic()
            except (AssertionError, OSError, ValueError, KeyError) as e:
                last_error = e
                if isinstance(e, AssertionError) and "exited" in str(e):
                    raise
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}\n" +
                             "\n".join(f"--- {a.name}\n{a.log_tail(15)}" for a in self.agents))

    def all_see(self, observers, name, status):
        return all(a.status_of(name) == status for a in observers)

    def converged(self, observers=None, alive=None):
        observers = observers if observers is not None else self.live()
        names = {a.name for a in (alive if alive is not None else observers)}
        for a in observers:
            ms = a.members()
            if {n for n, m in ms.items() if m["status"] == "alive"} != names:
                return False
        return True

    def stop(self):
        for a in self.agents:
            if a.running():
                try:
                    a.signal(signal.SIGCONT)
                except OSError:
                    pass
                try:
                    a.terminate(timeout=5)
                except AssertionError:
                    pass
        if os.environ.get("SHOAL_KEEP_TMP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
