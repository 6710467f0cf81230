"""`shoal project …` and `shoal where` against a fake agent that speaks docs/projects-api.md.

Checks the CLI side of the contract without a mesh: request bodies (absolute
paths, quota bytes), operation polling every ~50 ms, outputs and exit codes
(1 refused/failed, 2 usage/unreachable, 3 `where` unavailable), the 409 that
names the primary. Real agents: tests/integration/test_placement.py.

Run: python3 tests/cli/project_cli_test.py /path/to/shoal   (port 27490)
"""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SHOAL = os.environ.get("SHOAL_BIN", "shoal")
PORT = int(os.environ.get("FAKE_AGENT_PORT", "27490"))
ADMIN = f"127.0.0.1:{PORT}"


def placement(pid, **kw):
    p = {"project": pid, "generation": 1, "version": 4, "epoch": 2, "primary": "node-3", "primary_id": "9f3c" * 16,
         "replicas": ["node-3", "node-0", "node-5"], "replica_ids": ["9f3c" * 16, "a" * 64, "b" * 64],
         "state": "stopped", "last_ack": {"snapshot": "", "seq": 0}, "preferred_dc": "b", "quota_bytes": 0}
    p.update(kw)
    return p


class FakeAgent:
    """Operations run for `polls_before_done` polls, then end as the route decided."""

    def __init__(self):
        self.requests = []  # (method, path, body)
        self.polls = {}     # op id -> [monotonic times]
        self.ops = {}
        self.projects = {}
        self.polls_before_done = 3
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def do_GET(self):
                fake.requests.append(("GET", self.path, None))
                self.reply(*fake.get(self.path))

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(("POST", self.path, body))
                self.reply(*fake.post(self.path, body))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def operation(self, kind, project, end):
        oid = len(self.ops) + 1
        self.ops[oid] = {"id": oid, "kind": kind, "project": project, "end": end}
        self.polls[oid] = []
        return 202, {"operation": oid}

    def get(self, path):
        if path.startswith("/v1/operations/"):
            oid = int(path.rsplit("/", 1)[1])
            if oid not in self.ops:
                return 404, {"error": "no such operation"}
            op = self.ops[oid]
            self.polls[oid].append(time.monotonic())
            view = {k: v for k, v in op.items() if k != "end"}
            if len(self.polls[oid]) <= self.polls_before_done:
                return 200, {**view, "state": "running", "progress": 0.5}
            return 200, {**view, **op["end"]}
        if path == "/v1/projects":
            return 200, {"projects": list(self.projects.values())}
        if path.startswith("/v1/projects/") and path.endswith("/snapshots"):
            pid = path.split("/")[3]
            if pid not in self.projects:
                return 404, {"error": f"no snapshots of {pid}", "code": "not_found"}
            return 200, {"project": pid, "snapshots": [
                {"id": "11" * 32, "time": 1704164645, "files": 3, "logical_bytes": 2048, "epoch": 1},
                {"id": "22" * 32, "time_ns": 1704164700_000_000_000, "files": 4, "logical_bytes": 4096, "epoch": 2}]}
        return 404, {"error": "no route"}

    def post(self, path, body):
        if path == "/v1/projects":
            pid = (body or {}).get("id", "gen-7f3a")
            if pid in self.projects:
                return self.operation("create", pid, {"state": "failed", "code": "already_exists",
                                                      "error": f"project {pid} already exists"})
            self.projects[pid] = placement(pid, quota_bytes=(body or {}).get("quota_bytes", 0))
            return self.operation("create", pid, {"state": "done", "result": self.projects[pid]})
        parts = path.split("/")  # ['', 'v1', 'projects', ID, verb]
        if len(parts) == 5 and parts[2] == "projects":
            pid, verb = parts[3], parts[4]
            if verb == "status":  # Like read, plus what each replica holds.
                if pid not in self.projects:
                    return self.operation("status", pid, {"state": "failed", "code": "not_found",
                                                          "error": f"no project {pid}"})
                result = {**self.projects[pid], "replica_status": [
                    {"name": "node-3", "primary": True, "answered": True, "holds_last_ack": True, "snapshots": 2},
                    {"name": "node-4", "primary": False, "answered": True, "holds_last_ack": False, "snapshots": 1},
                    {"name": "node-5", "primary": False, "answered": False}]}
                return self.operation("status", pid, {"state": "done", "result": result})
            if verb == "read":
                if pid == "unavail":
                    return self.operation("read", pid, {"state": "failed", "code": "unavailable",
                                                        "error": "1 of 3 acceptors answered within 5 s"})
                if pid not in self.projects:
                    return self.operation("read", pid, {"state": "failed", "code": "not_found",
                                                        "error": f"no project {pid}"})
                return self.operation("read", pid, {"state": "done", "result": self.projects[pid]})
            if verb == "save":
                if pid == "notprimary":
                    return 409, {"error": "not the primary of notprimary (node-3 is, at epoch 2)",
                                 "code": "failed_precondition", "primary": "node-3"}
                snap = "ab" * 32
                acked = "" if pid == "unacked" else snap
                return self.operation("save", pid, {"state": "done", "result": {
                    "placement": placement(pid, last_ack={"snapshot": acked, "seq": 1}), "snapshot": snap,
                    "files": 4, "logical_bytes": 4096, "new_bytes": 100}})
            if verb == "restore":
                return self.operation("restore", pid, {"state": "done", "result": {
                    "snapshot": "22" * 32, "files": 4, "bytes": 4096}})
        return 404, {"error": "no route"}


class ProjectCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeAgent()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def shoal(self, *args, cwd=None):
        return subprocess.run([SHOAL, *args, "--admin", ADMIN], capture_output=True, text=True, timeout=20, cwd=cwd)

    def last_request(self):
        return self.fake.requests[-1] if self.fake.requests[-1][0] == "POST" else \
            [r for r in self.fake.requests if r[0] == "POST"][-1]

    def test_create_sends_absolute_from_and_quota_bytes_and_prints_the_id(self):
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "src"))
            r = self.shoal("project", "create", "--id", "p1", "--from", "src", "--quota", "1.5G", "--dc", "b", cwd=d)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "p1\n", ""))
            body = [b for m, p, b in self.fake.requests if m == "POST" and p == "/v1/projects"][-1]
            self.assertEqual(body, {"id": "p1", "from": os.path.join(os.path.realpath(d), "src"),
                                    "quota_bytes": 3 << 29, "dc": "b"})
        # Polled every ~50 ms until done.
        oid = max(self.fake.polls)
        times = self.fake.polls[oid]
        self.assertEqual(len(times), self.fake.polls_before_done + 1)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(0.04 <= g <= 0.5 for g in gaps), gaps)
        r = self.shoal("project", "create", "--id", "p1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists", r.stderr)
        self.assertIn("already_exists", r.stderr)
        r = self.shoal("project", "create", "--quota", "2G", "--json")
        self.assertEqual(json.loads(r.stdout)["quota_bytes"], 2 << 30)

    def test_where(self):
        self.shoal("project", "create", "--id", "w1")
        r = self.shoal("where", "w1", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        w = json.loads(r.stdout)
        self.assertEqual((w["project"], w["epoch"], w["primary"]), ("w1", 2, "node-3"))
        self.assertEqual(w["replicas"], ["node-3", "node-0", "node-5"])
        r = self.shoal("where", "w1")
        self.assertEqual(r.stdout, "w1: epoch 2, primary node-3, replicas node-3 node-0 node-5, last ack none\n")
        r = self.shoal("where", "unavail")
        self.assertEqual((r.returncode, r.stdout), (3, ""))
        self.assertEqual(r.stderr, "unavailable: 1 of 3 acceptors answered within 5 s\n")
        r = self.shoal("where", "nope", "--json")
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertIn("no project nope (not_found)", r.stderr)

    def test_save(self):
        r = self.shoal("project", "save", "s1")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ab" * 32 + "\n", ""))
        r = self.shoal("project", "save", "notprimary")
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertIn("the primary is node-3", r.stderr)
        r = self.shoal("project", "save", "unacked")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not acknowledged", r.stderr)
        r = self.shoal("project", "save", "s1", "--json")
        self.assertEqual(json.loads(r.stdout)["new_bytes"], 100)

    def test_list_status_snapshots_restore(self):
        self.shoal("project", "create", "--id", "l1")
        r = self.shoal("project", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["PROJECT", "EPOCH", "PRIMARY", "REPLICAS", "STATE", "LAST", "ACK"])
        self.assertTrue(any(line.split()[:3] == ["l1", "2", "node-3"] for line in lines[1:]), r.stdout)
        self.assertIn("l1", [p["project"] for p in json.loads(self.shoal("project", "list", "--json").stdout)["projects"]])
        st = json.loads(self.shoal("project", "status", "l1", "--json").stdout)
        self.assertEqual((st["epoch"], st["local_snapshot"]["id"]), (2, "22" * 32))
        self.assertEqual(len(st["replica_status"]), 3)
        r = self.shoal("project", "status", "l1")
        self.assertIn("newest snapshot 222222222222 at 2024-01-02T03:05:00Z", r.stdout)
        self.assertIn("holds the last acknowledged snapshot", r.stdout)
        self.assertIn("BEHIND", r.stdout)
        self.assertIn("did not answer", r.stdout)
        r = self.shoal("project", "snapshots", "l1")
        self.assertEqual(r.stdout.splitlines()[1].split()[:3], ["111111111111", "2024-01-02T03:04:05Z", "3"])
        r = self.shoal("project", "snapshots", "zz")
        self.assertEqual(r.returncode, 1)
        r = self.shoal("project", "restore", "l1", "--to", "/tmp/x/../out")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.last_request()[2], {"to": "/tmp/out"})
        self.assertIn("restored l1 snapshot 222222222222 to /tmp/out: 4 files", r.stdout)
        self.shoal("project", "restore", "l1", "--to", "/o", "--snapshot", "latest-acked")
        self.assertEqual(self.last_request()[2], {"to": "/o", "snapshot": "latest-acked"})


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        SHOAL = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
