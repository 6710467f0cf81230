"""Snapshot transfers between real agents on 127.0.0.1 (issue 5).

Run one case: SHOAL_BIN=build/release/bin/shoal python3 -m unittest test_transfer.TransferTest.test_push_restores_byte_identical
Each test uses its own port range (28800-28999).

An agent keeps its snapshot store in DATA_DIR/store (its own LMDB environment;
DATA_DIR itself holds the agent's identity and keyring), so snapshots are made
with `shoal snapshot create --store DATA_DIR/store` while the agent runs.
"""

import filecmp
import json
import os
import random
import socket
import subprocess
import threading
import time
import unittest

from harness import SHOAL, Cluster


def make_tree(root, seed, files=20, size_max=400_000):
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "sub", "deeper"), exist_ok=True)
    for i in range(files):
        d = rng.choice(["", "sub", os.path.join("sub", "deeper")])
        with open(os.path.join(root, d, f"f{i}.bin"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(0, size_max)))
    with open(os.path.join(root, "text.txt"), "w") as f:
        f.write("\n".join(str(i) for i in range(50_000)))
    os.symlink("text.txt", os.path.join(root, "link"))


def same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(os.path.join(a, d), os.path.join(b, d)) for d in cmp.common_dirs)


class TransferHelpers:
    """Clusters, snapshots and transfer lists for the transfer test classes."""
    port_base = 28800

    def cluster(self, slot):
        c = Cluster(self.port_base + 20 * slot)  # Slots 0-9 stay within 28800-28999.
        self.addCleanup(c.stop)
        return c

    def two_agents(self, slot):
        c = self.cluster(slot)
        agents = c.start(2)
        c.wait_for(lambda: c.converged(), 10, "2 agents to list each other alive")
        return c, agents

    def store(self, agent):
        return os.path.join(agent.data_dir, "store")

    def snapshot(self, agent, project, src):
        r = subprocess.run([SHOAL, "snapshot", "create", "--store", self.store(agent), "--project", project, src],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split()[0]

    def restore(self, agent, project, snapshot, target):
        r = subprocess.run([SHOAL, "snapshot", "restore", "--store", self.store(agent), "--project", project,
                            "--snapshot", snapshot, "--to", target], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def verify(self, agent):
        return subprocess.run([SHOAL, "snapshot", "verify", "--store", self.store(agent)],
                              capture_output=True, text=True, timeout=60)

    def transfers(self, agent):
        return json.loads(agent.cli("transfers", "--json").stdout)["transfers"]



class TransferTest(TransferHelpers, unittest.TestCase):
    def test_push_restores_byte_identical(self):
        c, (a, b) = self.two_agents(0)
        src = os.path.join(c.root, "src")
        make_tree(src, 1)
        snap = self.snapshot(a, "p1", src)
        r = a.cli("replicate", "--project", "p1", "--snapshot", snap, "--to", b.name)
        self.assertIn("replicated snapshot", r.stdout)
        out = os.path.join(c.root, "out")
        self.restore(b, "p1", snap, out)
        self.assertTrue(same_tree(src, out))
        self.assertEqual(self.verify(b).returncode, 0)
        sent = self.transfers(a)[0]
        self.assertEqual((sent["direction"], sent["state"], sent["peer"]), ("send", "done", b.name))
        self.assertGreater(sent["chunks"], 0)
        received = self.transfers(b)[0]
        self.assertEqual((received["direction"], received["state"], received["peer"]), ("receive", "done", a.name))
        # Again: the receiver holds it; nothing is sent.
        a.cli("replicate", "--project", "p1", "--snapshot", snap, "--to", b.name)
        self.assertEqual(self.transfers(a)[0]["chunks"], 0)
        metrics = urllib_get(a, "/metrics")
        self.assertIn("shoal_transfer_chunks_sent_total", metrics)

    def test_next_snapshot_sends_only_new_chunks(self):
        c, (a, b) = self.two_agents(1)
        src = os.path.join(c.root, "src")
        make_tree(src, 2)
        first = self.snapshot(a, "p", src)
        a.cli("replicate", "--project", "p", "--snapshot", first, "--to", b.name)
        chunks_first = self.transfers(a)[0]["chunks"]
        with open(os.path.join(src, "sub", "new.bin"), "wb") as f:
            f.write(os.urandom(100_000))
        second = self.snapshot(a, "p", src)
        a.cli("replicate", "--project", "p", "--snapshot", "latest", "--to", b.name)
        t = self.transfers(a)[0]
        self.assertEqual(t["snapshot"][:12], second[:12])
        # The new file's chunk(s), the changed trees and the commit.
        self.assertLess(t["chunks"], 12)
        self.assertLess(t["chunks"], chunks_first)
        out = os.path.join(c.root, "out")
        self.restore(b, "p", second, out)
        self.assertTrue(same_tree(src, out))

    def test_failures_exit_nonzero_with_the_reason(self):
        c, (a, b) = self.two_agents(2)
        src = os.path.join(c.root, "src")
        make_tree(src, 3, files=3)
        snap = self.snapshot(a, "p", src)
        r = a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", "no-such-node", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no member", r.stderr)
        r = b.cli("replicate", "--project", "p", "--snapshot", snap, "--to", a.name, check=False)
        self.assertEqual(r.returncode, 1)  # b does not hold it.
        r = a.cli("replicate", "--project", "p", "--snapshot", snap, check=False)
        self.assertEqual(r.returncode, 2)

    def test_pull_restores_byte_identical(self):
        c, (a, b) = self.two_agents(4)
        src = os.path.join(c.root, "src")
        make_tree(src, 5, files=10)
        snap = self.snapshot(a, "p", src)
        r = b.cli("replicate", "--project", "p", "--snapshot", snap, "--from", a.name)
        self.assertIn("from " + a.name, r.stdout)
        out = os.path.join(c.root, "out")
        self.restore(b, "p", snap, out)
        self.assertTrue(same_tree(src, out))
        served = self.transfers(a)[0]
        self.assertEqual((served["direction"], served["state"]), ("send", "done"))
        # A prefix cannot be resolved by the puller; an unheld id is refused by the holder.
        r = b.cli("replicate", "--project", "p", "--snapshot", snap[:12], "--from", a.name, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("full id", r.stderr)
        r = b.cli("replicate", "--project", "p", "--snapshot", "ab" * 32, "--from", a.name, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not held", r.stderr)

    def test_stranger_without_the_cluster_key_is_refused_and_counted(self):
        c, (a, b) = self.two_agents(5)
        # A transfer preamble and a well-formed message 1 under a key the cluster does not hold,
        # sent to the shared gossip/transfer TCP port.
        body = bytes([0x93, 0x01, 0xc4, 0x20]) + os.urandom(32) + bytes([0xc4, 0x10]) + os.urandom(16)
        hello = b"SHOALTX\x01" + len(body).to_bytes(4, "big") + body
        with socket.create_connection(("127.0.0.1", a.gossip_port), timeout=5) as s:
            s.sendall(hello)
            s.settimeout(5)
            self.assertEqual(s.recv(100), b"")  # Closed without a word.
        c.wait_for(lambda: 'shoal_transfer_channel_failures_total{reason="wrong_cluster_key"} 1'
                   in urllib_get(a, "/metrics"), 10, "the refusal to be counted")
        # Garbage after the 'S' is malformed, also refused; gossip is undisturbed.
        with socket.create_connection(("127.0.0.1", a.gossip_port), timeout=5) as s:
            s.sendall(b"SHOALTX\x01" + b"\xff" * 64)
            s.settimeout(5)
            self.assertEqual(s.recv(100), b"")
        self.assertTrue(c.converged())
        self.assertEqual(self.transfers(a), [])

    def test_receiver_kill9_mid_transfer_then_resume_sends_only_the_rest(self):
        c, (a, b) = self.two_agents(3)
        src = os.path.join(c.root, "src")
        make_tree(src, 4, files=40, size_max=600_000)  # About 12 MB of incompressible data.
        snap = self.snapshot(a, "p", src)
        a.http("POST", "/v1/transfers/limit", {"bytes_per_second": 3_000_000})
        r = a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name, "--detach")
        self.assertIn("started", r.stdout)
        c.wait_for(lambda: self.transfers(b) and self.transfers(b)[0]["chunks"] >= 20, 20,
                   "the receiver to store some chunks")
        b.kill9()
        c.wait_for(lambda: self.transfers(a)[0]["state"] == "failed", 30, "the sender to see the transfer fail")
        # The receiver's store is consistent, and the snapshot is not there.
        self.assertEqual(self.verify(b).returncode, 0)
        b.start()
        c.wait_for(lambda: c.converged(), 15, "the receiver to rejoin")
        a.http("POST", "/v1/transfers/limit", {"bytes_per_second": 0})
        a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name)
        t = self.transfers(a)[0]
        received = [x for x in self.transfers(b) if x["state"] == "done"][0]
        self.assertGreater(received["chunks_already_held"], 0)
        total = t["chunks"] + received["chunks_already_held"]
        self.assertLess(t["chunks"], total)
        out = os.path.join(c.root, "out")
        self.restore(b, "p", snap, out)
        self.assertTrue(same_tree(src, out))
        self.assertEqual(self.verify(b).returncode, 0)

    def test_watch_streams_transfer_events(self):
        c, (a, b) = self.two_agents(9)
        src = os.path.join(c.root, "src")
        make_tree(src, 9, files=16, size_max=600_000)  # About 5 MB of incompressible data.
        snap = self.snapshot(a, "p", src)
        streams = {}
        for agent, flag in ((a, "--json"), (b, None)):
            cmd = [SHOAL, "watch", "--admin", agent.admin] + ([flag] if flag else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            self.addCleanup(lambda p=proc: (p.kill(), p.wait(), p.stdout.close()))
            lines = []
            threading.Thread(target=lambda p=proc, out=lines: [out.append(l) for l in p.stdout], daemon=True).start()
            streams[agent.name] = lines
        time.sleep(0.5)  # Both streams connected.
        a.http("POST", "/v1/transfers/limit", {"bytes_per_second": 2_000_000})  # About 2.5 s: progress events.
        a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name)
        c.wait_for(lambda: any("transfer_completed" in l for l in streams[b.name]), 10, "the receiver's completion")
        events = [json.loads(l) for l in streams[a.name]]
        kinds = [e["event"] for e in events if "transfer" in e]
        self.assertEqual(kinds[0], "transfer_started")
        self.assertEqual(kinds[-1], "transfer_completed")
        progress = [e for e in events if e["event"] == "transfer_progress"]
        self.assertGreaterEqual(len(progress), 1)
        self.assertLessEqual(len(progress), 6)  # At most one a second.
        t = progress[-1]["transfer"]
        self.assertEqual((t["direction"], t["project"], t["peer"], t["state"]), ("send", "p", b.name, "active"))
        self.assertGreater(t["bytes"], 0)
        self.assertEqual(events[-1]["transfer"]["state"], "done")
        # The human form: one line per event, naming the transfer.
        done = [l for l in streams[b.name] if "transfer_completed" in l][0]
        self.assertIn("receive p " + snap[:12] + " from " + a.name, done)


def urllib_get(agent, path):
    import urllib.request
    with urllib.request.urlopen(f"http://{agent.admin}{path}", timeout=5) as r:
        return r.read().decode()


if __name__ == "__main__":
    unittest.main()
