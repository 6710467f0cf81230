"""Membership fault cases against real agents on 127.0.0.1 (issue 2).

Run one case: SHOAL_BIN=build/release/bin/shoal python3 -m unittest test_membership.MembershipTest.test_kill9_is_declared_dead
Each test uses its own port range (28000-28999) so ctest may run them in parallel.
"""

import os
import signal
import socket
import subprocess
import time
import unittest

from harness import SHOAL, Cluster, keygen


class MembershipTest(unittest.TestCase):
    port_base = 28000

    def cluster(self, slot, **kw):
        c = Cluster(self.port_base + 40 * slot, **kw)
        self.addCleanup(c.stop)
        return c

    def test_join_converges_and_members_json_has_fields(self):
        c = self.cluster(0)
        agents = c.start(5)
        c.wait_for(lambda: c.converged(), 10, "5 agents to list each other alive")
        ms = agents[0].members()
        self.assertEqual(len(ms), 5)
        for m in ms.values():
            for field in ("name", "id", "dc", "addr", "status", "incarnation", "health"):
                self.assertIn(field, m)
            self.assertIn(m["status"], ("alive", "suspect", "dead", "left"))
        self.assertEqual(ms["node-1"]["dc"], "dc2")
        self.assertEqual(ms["node-1"]["addr"], agents[1].addr)
        # --status filters.
        only_alive = agents[0].cli("members", "--json", "--status", "dead").stdout
        self.assertEqual(only_alive.strip(), "[]")

    def test_kill9_is_declared_dead_by_every_agent(self):
        c = self.cluster(1)
        agents = c.start(5)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        victim = agents[3]
        victim.kill9()
        killed_at = time.monotonic()
        others = [a for a in agents if a is not victim]
        seen = c.wait_for(lambda: c.all_see(others, victim.name, "dead"), 15, "every agent to list the killed agent dead")
        # Host is up, so the kernel refuses: detection must be fast, not SWIM's suspicion timeout.
        self.assertLess(seen - killed_at, 6.0)
        for a in others:
            self.assertEqual(a.status_of(others[0].name), "alive")

    def test_sigstop_3s_is_never_declared_dead_and_refutes(self):
        c = self.cluster(2)
        agents = c.start(5)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        victim = agents[2]
        others = [a for a in agents if a is not victim]
        victim.signal(signal.SIGSTOP)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for a in others:
                self.assertNotEqual(a.status_of(victim.name), "dead", f"{a.name} declared a paused agent dead")
            time.sleep(0.2)
        victim.signal(signal.SIGCONT)
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            for a in others:
                self.assertNotEqual(a.status_of(victim.name), "dead")
            time.sleep(0.2)
        c.wait_for(lambda: c.converged(), 10, "everyone alive again after SIGCONT")
        # The resumed node accused nobody.
        for name, m in victim.members().items():
            self.assertEqual(m["status"], "alive", f"resumed node sees {name} as {m['status']}")

    def test_restart_after_kill9_rejoins_with_higher_incarnation(self):
        c = self.cluster(3)
        agents = c.start(4)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        victim = agents[1]
        before = agents[0].members()[victim.name]["incarnation"]
        victim.kill9()
        c.wait_for(lambda: agents[0].status_of(victim.name) == "dead", 15, "the killed agent dead")
        victim.start(join=[])  # No --join: it must find the mesh from its data dir.
        c.wait_for(lambda: c.converged(), 15, "the restarted agent alive everywhere")
        after = agents[0].members()[victim.name]["incarnation"]
        self.assertGreater(after, before)

    def test_agent_with_wrong_cluster_key_never_appears(self):
        c = self.cluster(4)
        agents = c.start(3)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        other_key = c.write_key_file("other.key", keygen())
        intruder = c.add(name="intruder", key_file=other_key)
        intruder.start(join=[agents[0].addr])
        time.sleep(3)
        for a in agents:
            self.assertNotIn("intruder", a.members())
        self.assertEqual(set(intruder.members()), {"intruder"})
        metrics = urllib_get(agents[0], "/metrics")
        self.assertRegex(metrics, r'shoal_datagrams_dropped_total\{reason="[a-z_]*key[a-z_]*"\} [1-9]')

    def test_sigterm_leaves_gracefully_and_exits_zero(self):
        c = self.cluster(5)
        agents = c.start(3)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        rc = agents[2].terminate()
        self.assertEqual(rc, 0)
        c.wait_for(lambda: c.all_see(agents[:2], agents[2].name, "left"), 10, "the others to see 'left'")

    def test_partition_heals_and_merges_on_its_own(self):
        c = self.cluster(6, extra=["--enable-fault-injection"])
        agents = c.start(4)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        left, right = agents[:2], agents[2:]
        for a in left:
            a.http("POST", "/v1/debug/drop", {"peers": [b.addr for b in right]})
        for a in right:
            a.http("POST", "/v1/debug/drop", {"peers": [b.addr for b in left]})
        c.wait_for(lambda: all(a.status_of(b.name) == "dead" for a in left for b in right) and
                   all(a.status_of(b.name) == "dead" for a in right for b in left), 60,
                   "each side to declare the other dead")
        for a in agents:
            a.http("POST", "/v1/debug/drop", {"peers": []})
        healed = time.monotonic()
        merged = c.wait_for(lambda: c.converged(), 20, "the two sides to merge")
        self.assertLess(merged - healed, 5.0 + 1.0)  # 5 s target plus CLI polling slack.

    def test_fault_injection_is_off_by_default(self):
        c = self.cluster(7)
        a = c.start(1)[0]
        with self.assertRaises(Exception):
            a.http("POST", "/v1/debug/drop", {"peers": ["127.0.0.1:1"]})

    def test_key_rotation_without_downtime(self):
        c = self.cluster(8)
        agents = c.start(3)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        old_key = open(c.key_file).read().strip()
        new_key = keygen()
        for a in agents:
            a.cli("keys", "install", new_key)
        for a in agents:
            a.cli("keys", "use", new_key)
        for a in agents:
            a.cli("keys", "remove", old_key)
        listed = agents[0].cli("keys", "list", "--json").stdout
        self.assertIn(new_key, listed)
        self.assertNotIn(old_key, listed)
        # Still one mesh, and a kill is still detected: traffic flows under the new key.
        agents[2].kill9()
        c.wait_for(lambda: c.all_see(agents[:2], agents[2].name, "dead"), 15, "detection under the new key")
        # The agent that was offline during the rotation rejoins once given the new key.
        agents[2].key_file = c.write_key_file("new.key", new_key)
        agents[2].start(join=[agents[0].addr])
        c.wait_for(lambda: c.converged(), 15, "the offline agent to rejoin with the new key")

    def test_watch_streams_events(self):
        c = self.cluster(9)
        agents = c.start(3)
        c.wait_for(lambda: c.converged(), 10, "convergence")
        watch = subprocess.Popen([SHOAL, "watch", "--json", "--admin", agents[0].admin], stdout=subprocess.PIPE,
                                 text=True)
        self.addCleanup(lambda: (watch.kill(), watch.wait()))
        time.sleep(0.5)
        agents[2].kill9()
        deadline = time.monotonic() + 15
        import json
        while time.monotonic() < deadline:
            line = watch.stdout.readline()
            if not line:
                break
            e = json.loads(line)
            self.assertIn("time", e)
            if e["event"] == "dead" and e["member"]["name"] == agents[2].name:
                return
        self.fail("no dead event streamed by shoal watch")

    def test_ipv6_bind_and_advertise(self):
        if not has_ipv6_loopback():
            self.skipTest("no IPv6 loopback on this machine")
        c = self.cluster(10)
        a = c.add(name="v6a")
        b = c.add(name="v6b")
        for agent in (a, b):
            agent.host = "::1"
            agent.extra += ["--advertise", agent.addr]
        a.start()
        b.start(join=[a.addr])
        c.wait_for(lambda: c.converged(), 10, "two IPv6 agents to converge")
        self.assertEqual(a.members()["v6b"]["addr"], f"[::1]:{b.gossip_port}")


class StartupChecksTest(unittest.TestCase):
    port_base = 28600

    def run_agent(self, c, *extra, key_file=None, data_dir=None):
        a = c.add()
        cmd = a.command()
        if key_file:
            cmd[cmd.index("--cluster-key-file") + 1] = key_file
        if data_dir:
            cmd[cmd.index("--data-dir") + 1] = data_dir
        return subprocess.run(cmd + list(extra), capture_output=True, text=True, timeout=15)

    def setUp(self):
        # A port range per test method, so ctest can run them in parallel.
        names = sorted(n for n in dir(self) if n.startswith("test_"))
        self.c = Cluster(self.port_base + 20 * names.index(self._testMethodName))
        self.addCleanup(self.c.stop)

    def test_key_file_readable_by_others_is_refused(self):
        loose = self.c.write_key_file("loose.key", keygen(), mode=0o644)
        r = self.run_agent(self.c, key_file=loose)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("chmod", r.stderr + r.stdout)

    def test_missing_key_file_is_refused(self):
        r = self.run_agent(self.c, key_file=os.path.join(self.c.root, "nope.key"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nope.key", r.stderr + r.stdout)

    def test_unwritable_data_dir_is_refused(self):
        if os.geteuid() == 0:
            bad = "/proc/shoal-not-writable"
        else:
            bad = os.path.join(self.c.root, "ro")
            os.mkdir(bad, 0o500)
        r = self.run_agent(self.c, data_dir=bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("data", (r.stderr + r.stdout).lower())

    def test_port_in_use_is_refused(self):
        a = self.c.add()
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind(("127.0.0.1", a.gossip_port))
        self.addCleanup(blocker.close)
        r = subprocess.run(a.command(), capture_output=True, text=True, timeout=15)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(str(a.gossip_port), r.stderr + r.stdout)

    def test_advertise_without_port_is_refused(self):
        r = self.run_agent(self.c, "--advertise", "127.0.0.1")
        self.assertEqual(r.returncode, 2)
        self.assertIn("port", r.stderr + r.stdout)

    def test_cli_with_unreachable_agent_exits_2(self):
        r = subprocess.run([SHOAL, "members", "--admin", "127.0.0.1:1"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)


def urllib_get(agent, path):
    import urllib.request
    with urllib.request.urlopen(f"http://{agent.admin}{path}", timeout=5) as r:
        return r.read().decode()


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
