"""kill -9 of the sender or the receiver at many cut points of a transfer (issue 5, "Bad input and faults").

Run one case: SHOAL_BIN=build/h-xfer/bin/shoal python3 -m unittest test_transfer_cuts.TransferCutTest.test_receiver_kill9_at_many_cut_points
Ports 28460-28499 (two slots of 20); nothing but 127.0.0.1.

Each cut point is its own snapshot (a distinct tree of random files, so that
the receiver holds none of its data chunks before): the transfer runs under a
bandwidth limit, which makes "killed when the receiver had accepted a fraction
f of the bytes" reproducible, and one agent is killed with SIGKILL there.
After each cut:
  - the receiver's store is consistent: `shoal snapshot verify` is clean and
    the snapshot is not cataloged (it becomes visible all at once or not at all);
  - the retried transfer completes and sends exactly the chunks the receiver
    lacked (chunks sent by the last attempt == chunks of the snapshot the
    receiver did not hold when it started), and nothing is stored twice;
  - the snapshot restores byte-identical on the receiver.
How much a cut loses is the receiver's business (verified chunks are written
in batches, and a batch not yet written when the receiver dies is fetched
again); what is sent again is always exactly what is missing.
"""

import json
import os
import subprocess
import sys
import unittest

from harness import SHOAL, Cluster
from test_transfer import TransferHelpers, make_tree, same_tree

FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
RATE = 5_000_000  # Bytes per second during the cut transfers: about 1.4 s per snapshot, polled every 0.1 s.


class TransferCutTest(TransferHelpers, unittest.TestCase):
    port_base = 28460

    def cluster(self, slot):
        c = Cluster(self.port_base + 20 * slot)
        self.addCleanup(c.stop)
        return c

    def stats(self, agent):
        r = subprocess.run([SHOAL, "snapshot", "stats", "--store", self.store(agent), "--json"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def listed(self, agent, project):
        r = subprocess.run([SHOAL, "snapshot", "list", "--store", self.store(agent), "--project", project, "--json"],
                           capture_output=True, text=True, timeout=60)
        return [s["id"] for s in json.loads(r.stdout)] if r.returncode == 0 and r.stdout.strip() else []

    def receiving(self, agent):
        """Bytes the receiver has accepted (verified) in its current transfer."""
        t = [x for x in self.transfers(agent) if x["direction"] == "receive" and x["state"] == "active"]
        return t[0]["bytes"] if t else 0

    def prepare(self, c, a):
        """One project and snapshot per cut point, with its chunk count and stored bytes on a."""
        cuts = []
        for i, f in enumerate(FRACTIONS):
            src = os.path.join(c.root, f"src{i}")
            make_tree(src, 1000 + i, files=24, size_max=600_000)  # About 7 MB of incompressible data.
            before = self.stats(a)
            snap = self.snapshot(a, f"p{i}", src)
            after = self.stats(a)
            cuts.append({"fraction": f, "project": f"p{i}", "snapshot": snap, "src": src,
                         "chunks": after["chunks"] - before["chunks"],
                         "bytes": after["stored_bytes"] - before["stored_bytes"]})
        return cuts

    def check_consistent(self, b, cut):
        r = self.verify(b)
        self.assertEqual(r.returncode, 0, f"verify after the cut at {cut['fraction']}: {r.stdout}{r.stderr}")
        self.assertNotIn(cut["snapshot"], self.listed(b, cut["project"]))

    def check_completed(self, c, a, b, cut, held, sent):
        """held: chunks of the snapshot b had when the retry started; sent: chunks the retry sent."""
        print(f"  cut at {cut['fraction']:.2f} ({cut['killed_at']:.2f} of {cut['bytes']} bytes accepted): "
              f"{held} of {cut['chunks']} chunks held, retry sent {sent}", file=sys.stderr)
        self.assertEqual(sent, cut["chunks"] - held,
                         f"cut at {cut['fraction']}: the retry sent {sent} chunks, "
                         f"{cut['chunks']} - {held} held were missing")
        self.assertIn(cut["snapshot"], self.listed(b, cut["project"]))
        out = os.path.join(c.root, "out-" + cut["project"])
        self.restore(b, cut["project"], cut["snapshot"], out)
        self.assertTrue(same_tree(cut["src"], out))

    def wait_and_kill(self, c, victim, b, cut):
        def reached():
            cut["killed_at"] = self.receiving(b) / cut["bytes"]  # The last figure seen before the kill.
            return cut["killed_at"] >= cut["fraction"]
        c.wait_for(reached, 30, f"the receiver to accept {cut['fraction']:.0%} of {cut['project']}")
        victim.kill9()

    def test_receiver_kill9_at_many_cut_points(self):
        c = self.cluster(0)
        a, b = c.start(2)
        c.wait_for(lambda: c.converged(), 10, "2 agents to list each other alive")
        cuts = self.prepare(c, a)
        held_any = 0
        for cut in cuts:
            base = self.stats(b)["chunks"]
            a.http("POST", "/v1/transfers/limit", {"bytes_per_second": RATE})
            tid = a.http("POST", "/v1/replicate", {"project": cut["project"], "snapshot": cut["snapshot"],
                                                   "to": b.name, "detach": True})["id"]
            self.wait_and_kill(c, b, b, cut)
            # The receiver's store as the crash left it (the agent is not running).
            self.check_consistent(b, cut)
            held = self.stats(b)["chunks"] - base
            self.assertLessEqual(held, cut["chunks"])
            held_any += held
            # The sender keeps the transfer and retries it on its own once b is back.
            a.http("POST", "/v1/transfers/limit", {"bytes_per_second": 0})
            b.start(join=[a.addr])
            c.wait_for(lambda: a.http("GET", f"/v1/transfers/{tid}")["state"] in ("done", "failed"), 30,
                       "the sender's retry to finish")
            t = a.http("GET", f"/v1/transfers/{tid}")
            self.assertEqual(t["state"], "done", t.get("error"))
            self.assertGreaterEqual(t["attempts"], 2)
            self.check_completed(c, a, b, cut, held, t["chunks"])
            self.assertEqual(self.stats(b)["chunks"], base + cut["chunks"])  # Nothing stored twice.
            self.assertEqual(self.verify(b).returncode, 0)
        self.assertGreater(held_any, 0)  # Some cuts came after a batch was stored: resume had work to skip.

    def test_sender_kill9_at_many_cut_points(self):
        c = self.cluster(1)
        a, b = c.start(2)
        c.wait_for(lambda: c.converged(), 10, "2 agents to list each other alive")
        cuts = self.prepare(c, a)
        for cut in cuts:
            base = self.stats(b)["chunks"]
            a.http("POST", "/v1/transfers/limit", {"bytes_per_second": RATE})
            a.http("POST", "/v1/replicate", {"project": cut["project"], "snapshot": cut["snapshot"],
                                             "to": b.name, "detach": True})
            self.wait_and_kill(c, a, b, cut)
            c.wait_for(lambda: self.transfers(b)[0]["state"] == "failed", 30, "the receiver to see the transfer fail")
            self.check_consistent(b, cut)
            # A new sender process: the transfer is gone with it, so replicate again (the limit is gone too).
            a.start(join=[b.addr])
            c.wait_for(lambda: c.converged(), 15, "the sender to rejoin")
            held = self.stats(b)["chunks"] - base  # b is idle: its failed session stored what it had verified.
            self.assertGreater(held, 0)  # The receiver keeps what it verified when the sender vanishes.
            self.assertLess(held, cut["chunks"])
            a.cli("replicate", "--project", cut["project"], "--snapshot", cut["snapshot"], "--to", b.name)
            t = self.transfers(a)[0]
            self.assertEqual((t["state"], t["project"]), ("done", cut["project"]))
            self.check_completed(c, a, b, cut, held, t["chunks"])
            self.assertEqual(self.stats(b)["chunks"], base + cut["chunks"])
            self.assertEqual(self.verify(b).returncode, 0)


if __name__ == "__main__":
    unittest.main()
