"""Project lifecycle between real agents on 127.0.0.1: periodic saves, stop,
open, move and delete (issue 6). Ports 26000-26499 only.

  SHOAL_BIN=build/release/bin/shoal python3 -m unittest -v test_project_lifecycle
"""

import hashlib
import json
import math
import os
import time
import unittest

import subprocess
import urllib.error
import urllib.request

from harness import SHOAL, Cluster
from test_placement import operations, port_free, tree_diff


class LifecycleTest(unittest.TestCase):
    port_base = 26000

    def cluster(self, slot, n, extra=()):
        base = self.port_base + 40 * slot
        busy = [p for p in range(base, base + 2 * n) if not port_free(p)]
        if busy:
            raise AssertionError(f"ports {busy} on 127.0.0.1 are in use")
        c = Cluster(base, extra=extra)
        self.addCleanup(c.stop)
        agents = c.start(n)
        c.wait_for(lambda: c.converged(), 20, f"{n} agents to list each other alive")
        return c, agents

    def make_tree(self, root, files):
        os.makedirs(root, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)

    def where(self, agent, project):
        return json.loads(agent.cli("where", project, "--json").stdout)

    def snapshots(self, agent, project):
        return agent.http("GET", f"/v1/projects/{project}/snapshots")["snapshots"]

    def test_periodic_save_stop_open_move_delete(self):
        c, agents = self.cluster(0, 3, extra=("--save-interval", "2s"))
        a0 = agents[0]
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"a.txt": b"first\n" * 1000, "b.bin": os.urandom(200_000)})
        a0.cli("project", "create", "--id", "life", "--from", src)
        workdir = os.path.join(a0.data_dir, "projects", "life")
        c.wait_for(lambda: os.path.isfile(os.path.join(workdir, "a.txt")), 20, "the working directory on the primary")
        first = self.where(a0, "life")
        self.assertEqual(first["state"], "running")
        self.assertEqual(first["primary"], a0.name)
        # Status asks each replica what it holds: all three hold the import.
        status = json.loads(agents[1].cli("project", "status", "life", "--json").stdout)
        self.assertEqual(len(status["replica_status"]), 3)
        for r in status["replica_status"]:
            self.assertTrue(r["answered"] and r["holds_last_ack"], r)
        table = agents[1].cli("project", "status", "life").stdout
        self.assertIn("holds the last acknowledged snapshot", table)

        # Periodic save: an edit is saved and acknowledged without asking.
        with open(os.path.join(workdir, "a.txt"), "ab") as f:
            f.write(b"edited\n")
        c.wait_for(lambda: self.where(a0, "life")["last_ack"]["seq"] > first["last_ack"]["seq"], 30,
                   "a periodic save to be acknowledged")

        # Stop: final save, state stopped, working directory removed on request.
        with open(os.path.join(workdir, "c.txt"), "wb") as f:
            f.write(b"written just before stop\n")
        expected = os.path.join(c.root, "expected")
        os.makedirs(expected)
        os.system(f"cp -a {workdir}/. {expected}/")
        a0.cli("project", "stop", "life", "--remove-workdir")
        stopped = self.where(a0, "life")
        self.assertEqual(stopped["state"], "stopped")
        self.assertFalse(os.path.exists(workdir))
        seq = stopped["last_ack"]["seq"]
        time.sleep(3)  # Longer than --save-interval: a stopped project is not saved.
        self.assertEqual(self.where(a0, "life")["last_ack"]["seq"], seq)

        # Open: the primary restores the last acknowledged save.
        a0.cli("project", "open", "life")
        c.wait_for(lambda: os.path.isfile(os.path.join(workdir, "c.txt")), 20, "the working directory to reopen")
        self.assertEqual(tree_diff(expected, workdir), [])

        # Move to another node: it becomes primary at a higher epoch and restores identically.
        target = next(a for a in agents if a.name != a0.name)
        a0.cli("project", "move", "life", "--to", target.name)
        moved = self.where(target, "life")
        self.assertEqual(moved["primary"], target.name)
        self.assertGreater(moved["epoch"], stopped["epoch"])
        out = os.path.join(c.root, "restored")
        target.cli("project", "restore", "life", "--to", out)
        self.assertEqual(tree_diff(expected, out), [])
        # The old primary's agent forwards a save to the new primary.
        target_dir = os.path.join(target.data_dir, "projects", "life")
        c.wait_for(lambda: os.path.isfile(os.path.join(target_dir, "c.txt")), 20, "the working directory on the target")
        snap = a0.cli("project", "save", "life").stdout.strip()
        self.assertEqual(self.where(target, "life")["last_ack"]["snapshot"], snap)
        self.assertEqual(operations(a0, "save", "life")[-1]["forwarded"]["to"], target.name)

        # Delete: every replica drops its snapshots; the old working directory is set aside.
        target.cli("project", "delete", "life")
        self.assertEqual(self.where(a0, "life")["state"], "deleted")
        c.wait_for(lambda: all(not self.snapshots(a, "life") for a in agents), 40, "every copy to be dropped")
        self.assertTrue(os.path.isdir(os.path.join(a0.data_dir, "projects-retired")))

    def test_save_over_the_quota_is_refused_and_nothing_acknowledged(self):
        c, agents = self.cluster(2, 3)
        a0 = agents[0]
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"small": os.urandom(100_000)})
        a0.cli("project", "create", "--id", "capped", "--quota", "300K", "--from", src)
        workdir = os.path.join(a0.data_dir, "projects", "capped")
        c.wait_for(lambda: os.path.isfile(os.path.join(workdir, "small")), 20, "the working directory")
        before = self.where(a0, "capped")["last_ack"]
        with open(os.path.join(workdir, "big"), "wb") as f:
            f.write(os.urandom(400_000))
        r = a0.cli("project", "save", "capped", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("quota", r.stderr.lower())
        self.assertEqual(self.where(a0, "capped")["last_ack"], before)

    @staticmethod
    def score(project, node_hex):
        """node/core/ranking.cc's rendezvous score, weight 1."""
        h = hashlib.blake2b(digest_size=8)
        h.update(len(project).to_bytes(8, "little"))
        h.update(project.encode())
        h.update(bytes.fromhex(node_hex))
        value = int.from_bytes(h.digest(), "big")
        u = ((value >> 11) + 0.5) * 2.0 ** -53
        return -1.0 / math.log(u)

    def test_a_settled_better_ranked_node_draws_a_replica_and_the_old_copy_goes(self):
        c, agents = self.cluster(3, 3, extra=("--rebalance-after", "2s"))
        a0, a1 = agents[0], agents[1]  # dc1, dc2
        newcomer = c.add(dc=a1.dc)
        newcomer.start(join=[a0.addr])
        new_id = newcomer.http("GET", "/v1/self")["id"]
        old_id = a1.http("GET", "/v1/self")["id"]
        newcomer.terminate()  # Leaves: not a candidate while the project is created.
        c.wait_for(lambda: a0.status_of(newcomer.name) == "left", 20, "the newcomer to have left")
        # A project for which the newcomer outranks node-1 in their data center.
        project = next(f"reb-{i}" for i in range(1000) if self.score(f"reb-{i}", new_id) > self.score(f"reb-{i}", old_id))
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"data": os.urandom(150_000)})
        a0.cli("project", "create", "--id", project, "--from", src)
        before = self.where(a0, project)
        self.assertIn(a1.name, before["replicas"])
        newcomer.start(join=[a0.addr])
        c.wait_for(lambda: newcomer.name in self.where(a0, project)["replicas"], 40,
                   "the settled newcomer to draw node-1's replica")
        after = self.where(a0, project)
        self.assertNotIn(a1.name, after["replicas"])
        self.assertEqual(after["primary"], before["primary"])
        self.assertEqual(after["epoch"], before["epoch"])
        self.assertEqual(after["last_ack"], before["last_ack"])
        snap = after["last_ack"]["snapshot"]
        self.assertIn(snap, [s["id"] for s in self.snapshots(newcomer, project)])
        # node-1's copy is collected once the listed replicas hold its newest.
        c.wait_for(lambda: not self.snapshots(a1, project), 40, "node-1's obsolete copy to be collected")

    def test_a_degraded_node_hands_off_its_primary_and_loses_its_replica_slot(self):
        c, agents = self.cluster(5, 6, extra=("--rebalance-after", "2s", "--enable-fault-injection"))
        by_name = {a.name: a for a in agents}
        for a in agents:  # Plenty of disk everywhere, whatever this machine has.
            a.http("POST", "/v1/debug/health", {"free_disk_bytes": 1 << 40})
        time.sleep(3)  # Settled (--rebalance-after) and the health gossiped.
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"data": os.urandom(200_000)})
        agents[0].cli("project", "create", "--id", "ailing", "--from", src)
        before = self.where(agents[0], "ailing")
        primary = by_name[before["primary"]]
        replica = by_name[next(r for r in before["replicas"] if r != primary.name)]
        peer_of = {a.name: next(b for b in agents if b.dc == a.dc and b is not a) for a in agents}
        # Both nodes' disks "fill": they gossip it, every ranking weighs them
        # down, the primary hands its role to the other node of its DC and
        # the replica's slot goes to the other node of its DC.
        for sick in (primary, replica):
            sick.http("POST", "/v1/debug/health", {"free_disk_bytes": 0})

        def moved():
            w = self.where(agents[0], "ailing")
            return (w["primary"] == peer_of[primary.name].name and primary.name not in w["replicas"]
                    and replica.name not in w["replicas"] and peer_of[replica.name].name in w["replicas"])
        c.wait_for(moved, 60, "the degraded primary and replica to be replaced by their DC peers")
        after = self.where(agents[0], "ailing")
        self.assertEqual(after["epoch"], before["epoch"] + 1)  # One primary change, no more.
        self.assertEqual(after["last_ack"], before["last_ack"])
        snap = after["last_ack"]["snapshot"]
        for name in after["replicas"]:
            self.assertIn(snap, [s["id"] for s in self.snapshots(by_name[name], "ailing")], name)
        # The degraded nodes' copies go once the listed replicas hold them.
        c.wait_for(lambda: not self.snapshots(primary, "ailing") and not self.snapshots(replica, "ailing"), 60,
                   "the degraded nodes' obsolete copies to be collected")
        # The route is a test switch: refused without --enable-fault-injection (see debug/drop) and on bad bodies.
        with self.assertRaises(urllib.error.HTTPError) as bad:
            agents[0].http("POST", "/v1/debug/health", {"free_disk_bytes": "lots"})
        self.assertEqual(bad.exception.code, 400)

    def test_save_on_a_non_primary_is_forwarded_to_the_primary(self):
        c, agents = self.cluster(6, 3)
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"a.txt": b"forwarded\n" * 1000})
        agents[0].cli("project", "create", "--id", "fwd", "--from", src)
        before = self.where(agents[0], "fwd")
        by_name = {a.name: a for a in agents}
        primary = by_name[before["primary"]]
        workdir = os.path.join(primary.data_dir, "projects", "fwd")
        c.wait_for(lambda: os.path.isfile(os.path.join(workdir, "a.txt")), 20, "the working directory on the primary")
        with open(os.path.join(workdir, "a.txt"), "ab") as f:
            f.write(b"edited on the primary\n")
        other = next(a for a in agents if a is not primary)

        snap = other.cli("project", "save", "fwd").stdout.strip()
        after = self.where(other, "fwd")
        self.assertEqual(after["last_ack"]["snapshot"], snap)
        self.assertEqual(after["last_ack"]["seq"], before["last_ack"]["seq"] + 1)
        self.assertEqual(after["primary"], primary.name)
        # The non-primary's operation mirrors the one the primary ran, and names it.
        [local] = operations(other, "save", "fwd")
        self.assertEqual(local["state"], "done", local)
        self.assertEqual(local["forwarded"]["to"], primary.name)
        self.assertEqual(local["result"]["snapshot"], snap)
        remote = primary.http("GET", f"/v1/operations/{local['forwarded']['operation']}")
        self.assertEqual((remote["kind"], remote["state"]), ("save", "done"))
        self.assertEqual(remote["result"]["snapshot"], snap)
        # Run once on the primary, whatever the retries.
        self.assertEqual(len(operations(primary, "save", "fwd")), 1)

        # A refusal on the primary comes back as the local operation's error.
        r = other.cli("project", "move", "fwd", "--to", "no-such-node", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no-such-node", r.stderr)
        self.assertIn("not an alive member", r.stderr)

    def test_garbage_bodies_on_project_routes_get_clear_400s(self):
        c, agents = self.cluster(4, 1)
        a0 = agents[0]

        def post(path, raw):
            req = urllib.request.Request(f"http://{a0.admin}{path}", data=raw, method="POST")
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"null")

        cases = [
            ("/v1/projects", b"not json", "json"),
            ("/v1/projects", b'{"id": "bad/id"}', "project id"),
            ("/v1/projects", b'{"id": 7}', "strings"),
            ("/v1/projects", b'{"from": "relative/dir"}', "absolute"),
            ("/v1/projects", b'{"quota_bytes": "lots"}', "number"),
            ("/v1/projects/p1/move", b"{}", "to"),
            ("/v1/projects/p1/stop", b'{"remove_workdir": "yes"}', "boolean"),
            ("/v1/projects/p1/restore", b'{"to": "rel"}', "absolute"),
            ("/v1/projects/p1/nonsense", b"{}", "unknown"),
        ]
        for path, raw, words in cases:
            status, body = post(path, raw)
            self.assertIn(status, (400, 404), (path, raw, status, body))
            self.assertIn(words, body["error"].lower(), (path, raw, body))
        self.assertTrue(a0.running())

    def snapshot_into(self, store, project, epoch, src):
        r = subprocess.run([SHOAL, "snapshot", "create", "--store", store, "--project", project, "--epoch", str(epoch),
                            src], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def test_replica_refuses_a_snapshot_stamped_with_an_older_epoch(self):
        c, agents = self.cluster(1, 3)
        a0, a1 = agents[0], agents[1]
        src = os.path.join(c.root, "src")
        self.make_tree(src, {"f": b"v1\n" * 100})
        a0.cli("project", "create", "--id", "fenced", "--from", src)
        # Placement events come from the node that committed the change: a0 runs the move.
        watch = subprocess.Popen([SHOAL, "watch", "--admin", a0.admin], stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        time.sleep(0.3)  # Subscribed before the move.
        a0.cli("project", "move", "fenced", "--to", a1.name)
        self.assertEqual(self.where(a1, "fenced")["epoch"], 2)
        # `shoal watch` shows the committed move.
        line = ""
        deadline = time.monotonic() + 10
        while "moved" not in line and time.monotonic() < deadline:
            line = watch.stdout.readline()
        self.assertIn(f"fenced moved: epoch 2, primary {a1.name}", line)
        # The deposed primary saves behind the mesh's back (straight into its
        # store, stamped with its old epoch) and pushes the result.
        self.make_tree(src, {"f": b"written by the old primary\n"})
        store = os.path.join(a0.data_dir, "store")
        stale = self.snapshot_into(store, "fenced", 1, src)
        r = a0.cli("replicate", "--project", "fenced", "--snapshot", stale, "--to", a1.name, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("epoch", r.stderr + r.stdout)
        self.assertNotIn(stale, [s["id"] for s in self.snapshots(a1, "fenced")])
        # The same data stamped with the current epoch is taken.
        fresh = self.snapshot_into(store, "fenced", 2, src)
        a0.cli("replicate", "--project", "fenced", "--snapshot", fresh, "--to", a1.name)
        self.assertIn(fresh, [s["id"] for s in self.snapshots(a1, "fenced")])


if __name__ == "__main__":
    unittest.main()
