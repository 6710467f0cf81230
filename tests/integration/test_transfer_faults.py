"""Transfer faults between real agents on 127.0.0.1 (issue 5, "Bad input and faults").

Run one case: SHOAL_BIN=build/h-xfer/bin/shoal python3 -m unittest test_transfer_faults.TransferFaultTest.test_flipped_byte_drops_the_connection_and_the_retry_completes
Slots 6-8 of test_transfer.py's scheme (28920-28979); nothing but 127.0.0.1.
The damaged-stream cases share slot 6: agents on 28920+4i..28923+4i, the proxy on 28936+i.
"""

import os
import socket
import time
import unittest

from flip_proxy import FlipProxy
from harness import Cluster
from test_transfer import TransferHelpers, make_tree, same_tree, urllib_get


def metric(agent, name):
    for line in urllib_get(agent, "/metrics").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


class TransferFaultTest(TransferHelpers, unittest.TestCase):
    def test_flipped_byte_drops_the_connection_and_the_retry_completes(self):
        self.damaged_stream_resumes(0, "flip", "decrypt_failed")

    def test_replayed_record_drops_the_connection_and_the_retry_completes(self):
        self.damaged_stream_resumes(1, "replay", "replayed")

    def test_reordered_records_drop_the_connection_and_the_retry_completes(self):
        self.damaged_stream_resumes(2, "reorder", "reordered")

    def test_truncated_stream_drops_the_connection_and_the_retry_completes(self):
        self.damaged_stream_resumes(3, "truncate", "truncated")

    def damaged_stream_resumes(self, i, mode, reason):
        # Slot 6 holds all four: agents on 28920+4i..+3, the proxy on 28936+i.
        c = Cluster(self.port_base + 20 * 6 + 4 * i)
        self.addCleanup(c.stop)
        a = c.add()
        a.start()
        proxy_port = self.port_base + 20 * 6 + 16 + i
        b = c.add(extra=["--advertise", f"127.0.0.1:{proxy_port}"])
        # Everything sent to b's advertised address goes through the proxy, which damages
        # the first transfer connection 4 MB in (mode: see flip_proxy.py).
        proxy = FlipProxy(proxy_port, b.gossip_port, flip_at=4_000_000, flips=1, mode=mode)
        self.addCleanup(proxy.stop)
        b.start(join=[a.addr])
        c.wait_for(lambda: c.converged(), 15, "2 agents to list each other alive through the proxy")
        src = os.path.join(c.root, "src")
        make_tree(src, 11, files=40, size_max=600_000)  # About 12 MB of incompressible data.
        snap = self.snapshot(a, "p", src)
        r = a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name)
        self.assertIn("replicated snapshot", r.stdout)
        self.assertEqual(proxy.flipped, 1)
        self.assertGreaterEqual(proxy.transfer_connections, 2)
        # The receiver's channel refused the damaged stream and dropped the connection.
        self.assertGreaterEqual(metric(b, f'shoal_transfer_channel_failures_total{{reason="{reason}"}}'), 1)
        sent = self.transfers(a)[0]
        self.assertEqual(sent["state"], "done")
        self.assertGreaterEqual(sent["attempts"], 2)
        self.assertGreaterEqual(metric(a, "shoal_transfer_retries_total"), 1)
        # The second connection resumed: what arrived before the flip was kept.
        received = [x for x in self.transfers(b) if x["direction"] == "receive"]
        self.assertEqual(received[0]["state"], "done")
        self.assertGreater(received[0]["chunks_already_held"], 0)
        self.assertEqual(received[1]["state"], "failed")
        self.assertEqual(self.verify(b).returncode, 0)
        out = os.path.join(c.root, "out")
        self.restore(b, "p", snap, out)
        self.assertTrue(same_tree(src, out))

    def test_silent_and_stalled_connections_are_freed_and_a_real_transfer_completes(self):
        c, (a, b) = self.two_agents(7)
        src = os.path.join(c.root, "src")
        make_tree(src, 12, files=30, size_max=400_000)
        snap = self.snapshot(a, "p", src)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        # 20 connections that send nothing (held by the shared listener until its idle timeout)
        # and 40 that start a transfer channel and stall inside message 1's record: 60, below
        # the shared listener's cap (64), so that a burst accepted at once is not cut there.
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", b.gossip_port), timeout=5)
            if i >= 20:
                s.sendall(b"SHOALTX\x01\x00\x00")
            socks.append(s)
        c.wait_for(lambda: metric(b, "shoal_transfer_connections_evicted_total") >= 40 - 16, 10,
                   "the oldest stalled handshakes to be evicted")
        started = time.monotonic()
        r = a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name)
        self.assertIn("replicated snapshot", r.stdout)
        self.assertLess(time.monotonic() - started, 10)  # Not held up by the stalled peers.
        self.assertEqual(self.verify(b).returncode, 0)
        out = os.path.join(c.root, "out")
        self.restore(b, "p", snap, out)
        self.assertTrue(same_tree(src, out))
        # Timeouts free every one of them (the listener's idle timeout and the handshake
        # timeout, both 10 s): each socket is closed by b.
        deadline = time.monotonic() + 20
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
        self.assertTrue(c.converged())

    def test_sender_kill9_mid_transfer_then_retry_sends_only_the_rest(self):
        c, (a, b) = self.two_agents(8)
        src = os.path.join(c.root, "src")
        make_tree(src, 13, files=40, size_max=600_000)  # About 12 MB of incompressible data.
        snap = self.snapshot(a, "p", src)
        a.http("POST", "/v1/transfers/limit", {"bytes_per_second": 3_000_000})
        a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name, "--detach")
        c.wait_for(lambda: self.transfers(b) and self.transfers(b)[0]["chunks"] >= 20, 20,
                   "the receiver to store some chunks")
        a.kill9()
        c.wait_for(lambda: self.transfers(b)[0]["state"] == "failed", 30, "the receiver to see the transfer fail")
        self.assertEqual(self.verify(b).returncode, 0)  # Consistent, and the snapshot is not there.
        a.start(join=[b.addr])
        c.wait_for(lambda: c.converged(), 15, "the sender to rejoin")
        a.cli("replicate", "--project", "p", "--snapshot", snap, "--to", b.name)
        t = self.transfers(a)[0]
        received = [x for x in self.transfers(b) if x["state"] == "done"][0]
        self.assertGreaterEqual(received["chunks_already_held"], 20)
        self.assertLess(t["chunks"], t["chunks"] + received["chunks_already_held"])
        out = os.path.join(c.root, "out")
        self.restore(b, "p", snap, out)
        self.assertTrue(same_tree(src, out))
        self.assertEqual(self.verify(b).returncode, 0)


if __name__ == "__main__":
    unittest.main()
