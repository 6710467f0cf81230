"""Placement under faults between real agents on 127.0.0.1 (issue 6, the two remaining scenarios).

1. Restart catch-up and collection of obsolete copies: kill -9 the primary of
   the most projects, wait for failover and for its replacement (same DC) in
   every replica set, restart it from its data dir, and check that it stays
   unlisted, that its copies are collected only once every listed replica
   holds the acknowledged snapshot (and that at no moment fewer than 2 listed
   replicas held it), and that restores on the new primaries are byte-identical.
2. Partition: cut one agent off (gossip and placement datagrams, both ways, with
   the agent's test-only `--enable-fault-injection` switch); it cannot save
   before or after the others fail over, its `where` is never stale, the new
   primary saves during the partition, and after healing the old primary
   forwards a save to the new primary (it never saves at its lost epoch) and
   the restore matches the partition-time tree.

The contract is docs/projects-api.md and docs/placement.md. Run one case:
  SHOAL_BIN=build/h-pf/bin/shoal python3 -m unittest -v test_placement_faults.PlacementFaultTest.test_partitioned_primary_cannot_save_and_learns_the_new_epoch
Ports: 27500-27999 (slot k uses 27500 + 40 k). Keep the trees with SHOAL_KEEP_TMP=1.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

from harness import SHOAL, Cluster
from test_placement import (PlacementHelpers, change_tree, doc_subtrees, make_project_dir, operations, port_free,
                            tree_diff)

REPAIR_BOUND_S = 90.0    # kill -9 -> new primary and a replacement replica for every project the node held.
COLLECT_BOUND_S = 90.0   # Restart -> every obsolete copy collected (the collection loop checks every 10 s).
PARTITION_BOUND_S = 90.0  # Cut -> the majority side has a new primary (detection of the cut-off node, then failover).


class HolderMonitor(threading.Thread):
    """Samples, until stopped, how many listed replicas of each project hold its acknowledged snapshot.

    Each round reads every project's placement linearizably through a live agent
    (POST /v1/projects/ID/read), then asks each listed replica's agent for its
    snapshots. A listed replica that is not running counts as not holding; one
    that is running but does not answer makes the sample inconclusive (not a
    violation). A conclusive sample with fewer than 2 holders is a violation.
    """

    def __init__(self, cluster, projects, askers):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.projects = list(projects)
        self.askers = list(askers)
        self.stopping = threading.Event()
        self.samples = {p: 0 for p in self.projects}
        self.inconclusive = 0
        self.min_holders = {}
        self.violations = []

    def read(self, agent, project):
        try:
            op = agent.http("POST", f"/v1/projects/{project}/read")["operation"]
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and not self.stopping.is_set():
                r = agent.http("GET", f"/v1/operations/{op}")
                if r["state"] == "done":
                    return r["result"]
                if r["state"] == "failed":
                    return None
                time.sleep(0.1)
        except (OSError, ValueError, KeyError):
            pass
        return None

    def run(self):
        names = {a.name: a for a in self.cluster.agents}
        i = 0
        while not self.stopping.is_set():
            for p in self.projects:
                if self.stopping.is_set():
                    return
                i += 1
                asker = self.askers[i % len(self.askers)]
                if not asker.running():
                    continue
                w = self.read(asker, p)
                if w is None or not w["last_ack"]["snapshot"]:
                    continue
                ack = w["last_ack"]["snapshot"]
                holders, conclusive = [], True
                for r in w["replicas"]:
                    a = names.get(r)
                    if a is None or not a.running():
                        continue  # Down: holds nothing anyone can read.
                    try:
                        snaps = a.http("GET", f"/v1/projects/{p}/snapshots")["snapshots"]
                    except (OSError, ValueError, KeyError):
                        conclusive = False
                        continue
                    if ack in [s["id"] for s in snaps]:
                        holders.append(r)
                if not conclusive:
                    self.inconclusive += 1
                    continue
                self.samples[p] += 1
                self.min_holders[p] = min(self.min_holders.get(p, 99), len(holders))
                if len(holders) < 2:
                    self.violations.append(f"{time.strftime('%H:%M:%S')} {p}: epoch {w['epoch']} replicas "
                                           f"{w['replicas']}, only {holders} hold last_ack {ack[:12]}")
            time.sleep(0.2)

    def stop(self):
        self.stopping.set()
        self.join(timeout=20)


class EventReader(threading.Thread):
    """Collects the JSON lines of one agent's GET /v1/events until the agent closes the stream."""

    def __init__(self, agent):
        super().__init__(daemon=True)
        self.events = []
        self.url = f"http://{agent.admin}/v1/events"

    def run(self):
        try:
            for line in urllib.request.urlopen(self.url, timeout=600):
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    pass
        except OSError:
            pass


class PlacementFaultTest(PlacementHelpers, unittest.TestCase):
    port_base = 27500  # Slots 0-11 stay within 27500-27999.

    def cluster(self, slot, n, extra=()):
        base = self.port_base + 40 * slot
        busy = [p for p in range(base, base + 2 * n) if not port_free(p)]
        if busy:
            raise AssertionError(f"ports {busy} on 127.0.0.1 are in use (another run of test_placement_faults?)")
        c = Cluster(base, extra=extra)
        self.addCleanup(c.stop)
        agents = c.start(n)  # node-i in dc(i % 3 + 1): two per DC for n = 6.
        c.wait_for(lambda: c.converged(), 20, f"{n} agents to list each other alive")
        return c, agents

    def snapshot_ids(self, agent, project):
        return [s["id"] for s in agent.http("GET", f"/v1/projects/{project}/snapshots")["snapshots"]]

    def create_and_save(self, c, creators, projects, subtrees):
        """Creates each project from a /usr/share/doc subtree through creators[i], edits and saves it on
        its primary; returns {project: (acknowledged snapshot, copy of the saved tree)}."""
        names = self.by_name(c)
        expected = {}
        for i, p in enumerate(projects):
            src = os.path.join(c.root, "src", p)
            make_project_dir(src, subtrees[i % len(subtrees)], p)
            placement = json.loads(creators[i % len(creators)].cli("project", "create", "--id", p, "--from", src,
                                                                   "--json").stdout)
            self.assert_placed(c, placement, p)
            primary = names[placement["primary"]]
            work = self.workdir(primary, p)
            c.wait_for(lambda: os.path.isdir(work) and tree_diff(src, work) == [], 30,
                       f"{p}: the imported tree in the working directory on {primary.name}")
            change_tree(work, p)
            saved = primary.cli("project", "save", p).stdout.strip()
            self.assertRegex(saved, r"^[0-9a-f]{16,}$")
            copy = os.path.join(c.root, "expected", p)
            shutil.copytree(work, copy, symlinks=True)
            expected[p] = (saved, copy)
            other = [a for a in c.agents if a is not primary][i % (len(c.agents) - 1)]
            self.assertEqual(self.where(other, p)["last_ack"]["snapshot"], saved, f"{p}: save not acknowledged")
        return expected

    # ---- 0. anti-entropy: a replica that missed a save pulls it by itself --------------

    def test_a_replica_that_missed_a_save_pulls_it_while_the_primary_is_paused(self):
        """The replica was down during a save (acknowledged by the primary and the third
        replica); it restarts while the primary is paused (SIGSTOP, so nobody pushes to
        it and nobody fails over), reads the register afresh, asks the other replicas
        who holds the acknowledged snapshot, and pulls it from the third one."""
        c, agents = self.cluster(2, 3)
        names = self.by_name(c)
        src = os.path.join(c.root, "src", "ae")
        make_project_dir(src, doc_subtrees(1)[0], "ae")
        placement = json.loads(agents[0].cli("project", "create", "--id", "ae", "--from", src, "--json").stdout)
        primary = names[placement["primary"]]
        lagging, third = [names[r] for r in placement["replicas"] if r != primary.name]
        work = self.workdir(primary, "ae")
        c.wait_for(lambda: os.path.isdir(work) and tree_diff(src, work) == [], 30, "the working directory")

        lagging.kill9()
        change_tree(work, "ae")
        saved = primary.cli("project", "save", "ae").stdout.strip()
        self.assertIn(saved, self.snapshot_ids(third, "ae"))
        primary.signal(signal.SIGSTOP)
        self.addCleanup(lambda: primary.signal(signal.SIGCONT) if primary.running() else None)
        lagging.start()  # No --join: it rejoins from the members it saved.
        c.wait_for(lambda: saved in self.snapshot_ids(lagging, "ae"), 25,
                   f"{lagging.name} to pull {saved[:12]} from {third.name} while {primary.name} is paused")
        def pulled():
            return [line for line in urllib.request.urlopen(f"http://{lagging.admin}/metrics", timeout=5).read()
                    .decode().splitlines() if line.startswith("shoal_project_snapshots_pulled_total ")]
        # The counter moves when the agent sees the transfer done (next tick), just after the catalog shows it.
        c.wait_for(lambda: pulled() == ["shoal_project_snapshots_pulled_total 1"], 5, "the pull to be counted")
        primary.signal(signal.SIGCONT)
        self.assertEqual(self.where(third, "ae")["last_ack"]["snapshot"], saved)
        r = subprocess.run([SHOAL, "snapshot", "verify", "--store", os.path.join(lagging.data_dir, "store"),
                            "--project", "ae"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    # ---- 1. restart catch-up, collection of obsolete copies ---------------------------

    def test_restarted_node_stays_unlisted_and_its_copies_are_collected_after_the_replicas_hold_them(self):
        c, agents = self.cluster(0, 6)
        names = self.by_name(c)
        dc_of = {a.name: a.dc for a in agents}
        projects = [f"pf-{i:02d}" for i in range(10)]
        t0 = time.monotonic()
        expected = self.create_and_save(c, agents, projects, doc_subtrees(5))
        setup_s = time.monotonic() - t0

        before = {p: self.where(agents[0], p) for p in projects}
        counts = {}
        for w in before.values():
            counts[w["primary"]] = counts.get(w["primary"], 0) + 1
        victim = names[max(sorted(counts), key=lambda n: counts[n])]
        affected = [p for p in projects if before[p]["primary"] == victim.name]
        listed = [p for p in projects if victim.name in before[p]["replicas"]]  # affected ⊆ listed
        survivors = [a for a in agents if a is not victim]

        monitor = HolderMonitor(c, projects, survivors)
        monitor.start()
        self.addCleanup(monitor.stop)

        victim.kill9()
        killed = time.monotonic()
        # Its store, read directly while it is down: it holds the acknowledged snapshot of every project it listed.
        for p in listed:
            r = subprocess.run([SHOAL, "snapshot", "list", "--store", os.path.join(victim.data_dir, "store"),
                                "--project", p, "--json"], capture_output=True, text=True, timeout=30, check=True)
            self.assertIn(expected[p][0], [s["id"] for s in json.loads(r.stdout)], f"{p}: {victim.name}'s store")

        # Every affected project gets a new primary; every replica set it was in replaces it within its DC.
        pending, repaired, new_primary_at = set(listed), {}, {}
        i = 0
        while pending and time.monotonic() - killed < REPAIR_BOUND_S:
            for p in sorted(pending):
                i += 1
                w = self.try_where(survivors[i % len(survivors)], p)
                if w is None:
                    continue
                if p in affected and w["primary"] != victim.name and p not in new_primary_at:
                    new_primary_at[p] = time.monotonic() - killed
                if victim.name not in w["replicas"]:
                    repaired[p] = w
                    pending.discard(p)
            time.sleep(0.3)
        repair_s = time.monotonic() - killed
        self.assertEqual(pending, set(), f"{victim.name} (kill -9) still listed after {REPAIR_BOUND_S} s: "
                         f"{ {p: self.try_where(survivors[0], p) for p in sorted(pending)} }")
        for p, w in repaired.items():
            self.assert_placed(c, w, p)
            added = set(w["replicas"]) - set(before[p]["replicas"])
            self.assertEqual(len(added), 1, f"{p}: before {before[p]['replicas']}, now {w['replicas']}")
            self.assertEqual(dc_of[added.pop()], victim.dc, f"{p}: replacement not in {victim.dc}: {w}")
            self.assertEqual(w["last_ack"]["snapshot"], expected[p][0], f"{p}: acknowledged save lost: {w}")
            if p in affected:
                self.assertNotEqual(w["primary"], victim.name)
                self.assertGreater(w["epoch"], before[p]["epoch"], w)
                self.assertIn(w["primary"], before[p]["replicas"], f"{p}: new primary was not a replica: {w}")

        # Restart it from its data dir, with no --join: it rejoins from the members it saved.
        victim.start()
        restarted = time.monotonic()
        events = EventReader(victim)
        events.start()
        c.wait_for(lambda: c.converged(), 30, f"{victim.name} to rejoin and every agent to list 6 alive")

        # Its copies go, and only once every listed replica holds the acknowledged snapshot.
        pending, collected_at = set(listed), {}
        while pending and time.monotonic() - restarted < COLLECT_BOUND_S:
            for p in sorted(pending):
                if self.snapshot_ids(victim, p):
                    continue
                seen = time.monotonic() - restarted
                w = self.where(survivors[0], p)
                self.assertNotIn(victim.name, w["replicas"], f"{p}: collected on a node that is listed: {w}")
                ack = w["last_ack"]["snapshot"]
                self.assertEqual(ack, expected[p][0], f"{p}: {w}")
                for r in w["replicas"]:
                    self.assertIn(ack, self.snapshot_ids(names[r], p),
                                  f"{p}: {victim.name} collected its copy but listed replica {r} lacks {ack[:12]}")
                collected_at[p] = seen
                pending.discard(p)
            time.sleep(0.5)
        self.assertEqual(pending, set(), f"{victim.name} still holds copies of {sorted(pending)} "
                         f"{COLLECT_BOUND_S} s after its restart:\n{victim.log_tail(40)}")

        # (a) It stays unlisted, and its own linearizable read says so too (never its stale records).
        for p in listed:
            mine, theirs = self.where(victim, p), self.where(survivors[1], p)
            self.assertNotIn(victim.name, mine["replicas"], f"{p}: {mine}")
            self.assertTrue(self.same_placement(mine, theirs), f"{p}: {victim.name} says {mine}, a survivor {theirs}")
            self.assertEqual(mine["last_ack"]["snapshot"], expected[p][0])
        # A working directory it had as primary is set aside, never deleted.
        for p in affected:
            self.assertFalse(os.path.exists(os.path.join(victim.data_dir, "projects", p)), p)
            retired = os.path.join(victim.data_dir, "projects-retired")
            self.assertTrue(any(n.startswith(p + ".epoch") for n in (os.listdir(retired) if os.path.isdir(retired)
                                                                     else [])),
                            f"{p}: working directory not set aside under {retired}")
        collected_events = [e["project"] for e in events.events if e.get("event") == "copy-collected"]
        for p in collected_events:
            self.assertIn(p, listed, f"copy-collected for {p}, which {victim.name} never held")

        # No moment with fewer than 2 listed replicas holding the acknowledged snapshot.
        monitor.stop()
        self.assertEqual(monitor.violations, [], "\n".join(monitor.violations))
        for p in projects:
            self.assertGreater(monitor.samples[p], 0, f"{p}: the monitor never sampled it")

        # (c) Restores on the (new) primaries are byte-identical to the acknowledged saves.
        for p in listed:
            w = self.where(survivors[2], p)
            host = names[w["primary"]]
            out = os.path.join(c.root, "restored", p)
            host.cli("project", "restore", p, "--to", out)
            self.assertEqual(tree_diff(expected[p][1], out), [], f"{p}: restore on {host.name} differs")

        print(f"\n  10 creates+saves {setup_s:.1f} s; killed {victim.name} (primary of {len(affected)}, replica of "
              f"{len(listed)}); new primaries at {sorted(round(v, 1) for v in new_primary_at.values())} s, "
              f"all replaced in {repair_s:.1f} s; after restart copies collected at "
              f"{sorted(round(v, 1) for v in collected_at.values())} s; copy-collected events seen: "
              f"{len(collected_events)}; monitor: {sum(monitor.samples.values())} samples, min holders "
              f"{min(monitor.min_holders.values())}, {monitor.inconclusive} inconclusive")

    # ---- 2. partition -----------------------------------------------------------------

    def drop(self, agent, peers):
        agent.http("POST", "/v1/debug/drop", {"peers": [a.addr for a in peers]})

    def test_partitioned_primary_cannot_save_and_learns_the_new_epoch(self):
        c, agents = self.cluster(1, 6, extra=["--enable-fault-injection"])
        names = self.by_name(c)
        iso = agents[1]  # node-1, dc2.
        others = [a for a in agents if a is not iso]
        projects = ["part-a", "part-b"]
        # Created through iso with its own DC preferred (the default): iso is the primary.
        expected = self.create_and_save(c, [iso], projects, doc_subtrees(2))
        before = {p: self.where(others[0], p) for p in projects}
        for p in projects:
            self.assertEqual(before[p]["primary"], iso.name, before[p])
            self.assertEqual(before[p]["last_ack"]["snapshot"], expected[p][0])
            change_tree(self.workdir(iso, p), p + " (cut off)")  # Something new to save.

        # Cut iso off, both directions.
        self.drop(iso, others)
        for a in others:
            self.drop(a, [iso])
        cut = time.monotonic()

        def refused_save(agent, p, when):
            r = agent.cli("project", "save", p, check=False)
            self.assertEqual(r.returncode, 1, f"save of {p} on {agent.name} {when}: rc {r.returncode} "
                             f"stdout {r.stdout!r} stderr {r.stderr!r}")
            self.assertEqual(r.stdout, "", when)
            self.assertRegex(r.stderr, r"unavailable|majority", f"save of {p} on {agent.name} {when}")
            return r.stderr.strip()

        # At once: no majority, so no save (not even the register read). The others may fail over while
        # these refusals run (each waits out the 5 s quorum timeout); either way nothing new is acknowledged.
        first_refusals = {}
        for p in projects:
            first_refusals[p] = (refused_save(iso, p, "right after the cut"), time.monotonic() - cut)
            w = self.where(others[1], p)
            self.assertEqual(w["last_ack"], before[p]["last_ack"], f"{p}: a refused save changed last_ack: {w}")
            if w["epoch"] != before[p]["epoch"]:
                self.assertNotEqual(w["primary"], iso.name, w)

        # The majority side elects a new primary at a higher epoch.
        moved = {}
        i = 0
        while len(moved) < len(projects) and time.monotonic() - cut < PARTITION_BOUND_S:
            for p in projects:
                i += 1
                w = None if p in moved else self.try_where(others[i % len(others)], p)
                if w and w["primary"] != iso.name:
                    moved[p] = w
            time.sleep(0.3)
        failover_s = time.monotonic() - cut
        self.assertEqual(sorted(moved), projects, f"no new primary within {PARTITION_BOUND_S} s of the cut: "
                         f"{ {p: self.try_where(others[0], p) for p in projects if p not in moved} }")
        for p, w in moved.items():
            self.assertGreater(w["epoch"], before[p]["epoch"], w)
            self.assertIn(w["primary"], before[p]["replicas"], w)
            self.assertEqual(w["last_ack"]["snapshot"], expected[p][0], w)

        # iso still cannot save, and its `where` is unavailable, never its stale view.
        later_refusals = {p: refused_save(iso, p, "after the failover") for p in projects}
        for p in projects:
            r = iso.cli("where", p, "--json", check=False)
            self.assertEqual((r.returncode, r.stdout), (3, ""), f"where {p} on the cut-off {iso.name}: {r.stderr!r}")

        # The new primary saves during the partition: acknowledged.
        saved2 = {}
        for p, w in moved.items():
            host = names[w["primary"]]
            work = self.workdir(host, p)
            c.wait_for(lambda: os.path.isdir(work) and tree_diff(expected[p][1], work) == [], 30,
                       f"{p}: {host.name} to open the acknowledged snapshot as its working directory")
            change_tree(work, p + " (new primary)")
            snap = host.cli("project", "save", p).stdout.strip()
            self.assertRegex(snap, r"^[0-9a-f]{16,}$")
            copy = os.path.join(c.root, "expected2", p)
            shutil.copytree(work, copy, symlinks=True)
            saved2[p] = (snap, copy)
            now = self.where(others[2], p)
            self.assertEqual(now["last_ack"]["snapshot"], snap, f"{p}: partition-time save not acknowledged: {now}")
            self.assertEqual((now["epoch"], now["primary"]), (w["epoch"], w["primary"]), now)

        # Heal.
        for a in agents:
            self.drop(a, [])
        healed = time.monotonic()
        c.wait_for(lambda: c.converged(), 30, "the mesh to merge after the heal")
        merged_s = time.monotonic() - healed

        for p, w in moved.items():
            final = self.where(others[0], p)
            self.assertEqual((final["epoch"], final["primary"], final["last_ack"]["snapshot"]),
                             (w["epoch"], w["primary"], saved2[p][0]), final)
            # A save asked of the old primary no longer runs there: once it has learned the new
            # epoch it forwards the save to the new primary, which snapshots its own working
            # directory (restored below, equal to the partition-time tree, not the old one).
            deadline, r = time.monotonic() + 30, None
            while time.monotonic() < deadline:
                r = iso.cli("project", "save", p, check=False)
                if r.returncode == 0:
                    break
                self.assertEqual((r.returncode, r.stdout), (1, ""), f"save of {p} on {iso.name} after the heal: "
                                                                    f"{r.stderr!r}")
                time.sleep(1)
            self.assertEqual(r.returncode, 0, f"save of {p} on {iso.name} 30 s after the heal: {r.stderr!r}")
            forwarded_snap = r.stdout.strip()
            last = operations(iso, "save", p)[-1]
            self.assertEqual(last.get("forwarded", {}).get("to"), w["primary"], last)
            after = self.where(others[1], p)
            self.assertEqual((after["epoch"], after["primary"], after["last_ack"]["snapshot"]),
                             (w["epoch"], w["primary"], forwarded_snap), after)
            # Its `where` answers the committed placement (or unavailable for a moment), never the stale one.
            deadline, mine = time.monotonic() + 30, None
            while mine is None and time.monotonic() < deadline:
                r = iso.cli("where", p, "--json", check=False)
                self.assertIn(r.returncode, (0, 3), r.stderr)
                if r.returncode == 0:
                    mine = json.loads(r.stdout)
                    self.assertEqual((mine["epoch"], mine["primary"]), (final["epoch"], final["primary"]), mine)
                else:
                    time.sleep(1)
            self.assertIsNotNone(mine, f"where {p} on {iso.name} still unavailable 30 s after the heal")
            # The restore on the new primary is the partition-time tree, byte for byte.
            out = os.path.join(c.root, "restored", p)
            names[w["primary"]].cli("project", "restore", p, "--to", out)
            self.assertEqual(tree_diff(saved2[p][1], out), [], f"{p}: restore on {w['primary']} differs")

        print(f"\n  cut {iso.name} off: save refused at once ({first_refusals[projects[0]][0][:90]!r}, {first_refusals[projects[0]][1]:.1f} s after the cut); "
              f"new primaries {[moved[p]['primary'] + '@' + str(moved[p]['epoch']) for p in projects]} after "
              f"{failover_s:.1f} s; refused again ({later_refusals[projects[0]][:90]!r}); merged {merged_s:.1f} s "
              f"after the heal, then its saves are forwarded to the new primary")


if __name__ == "__main__":
    unittest.main()
