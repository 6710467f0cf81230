"""Placement, saves and failover between real agents on 127.0.0.1 (issue 6).

The contract is docs/projects-api.md. Run one case:
  SHOAL_BIN=build/h-cli/bin/shoal python3 -m unittest test_placement.PlacementTest.test_kill9_primary_fails_over_and_restores_byte_identical
Ports: 27000-27499 (slot k uses 27000 + 40 k). Keep the trees with SHOAL_KEEP_TMP=1.

Projects are made of real files: subtrees of /usr/share/doc, chosen
deterministically (sorted names, evenly spaced among those of 300 KB - 3 MB).
A project's working directory on its primary is DATA_DIR/projects/ID (or the
"workdir" the agent reports in `shoal project status --json`); `create --from`
restores the imported snapshot there and `save` snapshots it.
"""

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time
import unittest
import urllib.error

from harness import SHOAL, Cluster

DOC_ROOT = "/usr/share/doc"
FAILOVER_BOUND_S = 30.0


# ---- File trees -------------------------------------------------------------

def tree_state(root):
    """{relative path: (kind, mode, payload)} for everything under root (root excluded).

    kind is "file" (payload: size and SHA-256 of the bytes), "dir", "link"
    (payload: the link target; no mode) or "other". Symlinks are never followed.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(mode), None)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = ("file", oct(mode), f"{st.st_size}:{h.hexdigest()}")
            else:
                out[rel] = ("other", oct(mode), stat.S_IFMT(st.st_mode))
    return out


def tree_diff(expected_root, actual_root, limit=10):
    """Human-readable differences between two trees (paths, kinds, bytes, modes); [] when identical."""
    want, got = tree_state(expected_root), tree_state(actual_root)
    diffs = []
    for rel in sorted(set(want) | set(got)):
        if rel not in got:
            diffs.append(f"missing: {rel}")
        elif rel not in want:
            diffs.append(f"unexpected: {rel}")
        elif want[rel] != got[rel]:
            diffs.append(f"differs: {rel}: expected {want[rel]}, got {got[rel]}")
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"... and {len(diffs) - limit} more"]
    return diffs


def doc_subtrees(count, low=300_000, high=3_000_000):
    """count readable /usr/share/doc subtrees of low..high bytes of regular files, evenly spaced by name."""
    eligible = []
    for name in sorted(os.listdir(DOC_ROOT)):
        path = os.path.join(DOC_ROOT, name)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        size, readable = 0, True
        for dirpath, dirnames, filenames in os.walk(path):
            for f in filenames:
                p = os.path.join(dirpath, f)
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode):
                    size += st.st_size
                    readable = readable and os.access(p, os.R_OK)
                elif not stat.S_ISLNK(st.st_mode):
                    readable = False  # Sockets, fifos: not project material.
            readable = readable and all(os.access(os.path.join(dirpath, d), os.R_OK | os.X_OK) for d in dirnames)
        if readable and low <= size <= high:
            eligible.append(path)
    if len(eligible) < 2:
        raise unittest.SkipTest(f"fewer than 2 subtrees of {low}-{high} bytes under {DOC_ROOT}")
    count = min(count, len(eligible))
    return [eligible[i * len(eligible) // count] for i in range(count)]


def make_project_dir(dst, subtree, project):
    shutil.copytree(subtree, dst, symlinks=True)
    with open(os.path.join(dst, "PROJECT"), "w") as f:
        f.write(f"{project} from {subtree}\n")
    os.chmod(os.path.join(dst, "PROJECT"), 0o640)


def change_tree(root, project):
    """A save-worthy change: one file grows, one is new (mode 0755), one is removed if there is a spare."""
    files = sorted(rel for rel, (kind, _, _) in tree_state(root).items() if kind == "file" and rel != "PROJECT")
    with open(os.path.join(root, files[0]), "ab") as f:
        f.write(f"\nchanged for {project}\n".encode())
    new = os.path.join(root, "added", "notes.sh")
    os.makedirs(os.path.dirname(new), exist_ok=True)
    with open(new, "w") as f:
        f.write(f"#!/bin/sh\necho {project}\n")
    os.chmod(new, 0o755)
    if len(files) > 2:
        os.remove(os.path.join(root, files[-1]))


# ---- Cluster helpers ----------------------------------------------------------

def port_free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use".
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def operations(agent, kind, project):
    """The operations of one kind and project an agent still lists (ids count up from 1)."""
    found, missing, i = [], 0, 0
    while missing < 3:  # Ids are dense; a few misses in a row is the end.
        i += 1
        try:
            op = agent.http("GET", f"/v1/operations/{i}")
        except urllib.error.HTTPError:
            missing += 1
            continue
        missing = 0
        if op["kind"] == kind and op["project"] == project:
            found.append(op)
    return found


class PlacementHelpers:
    port_base = 27000

    def cluster(self, slot, n):
        base = self.port_base + 40 * slot  # Slots 0-11 stay within 27000-27499.
        busy = [p for p in range(base, base + 2 * n) if not port_free(p)]
        if busy:  # Another run of these tests: its agents would answer ours.
            raise AssertionError(f"ports {busy} on 127.0.0.1 are in use (another run of test_placement?)")
        c = Cluster(base)
        self.addCleanup(c.stop)
        agents = c.start(n)  # node-i in dc(i % 3 + 1): two per DC for n = 6.
        c.wait_for(lambda: c.converged(), 20, f"{n} agents to list each other alive")
        return c, agents

    def by_name(self, c):
        return {a.name: a for a in c.agents}

    def where(self, agent, project):
        r = agent.cli("where", project, "--json")
        return json.loads(r.stdout)

    def try_where(self, agent, project):
        """The placement, or None if `shoal where` failed (e.g. exit 3 during a failover)."""
        r = agent.cli("where", project, "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def workdir(self, agent, project):
        st = json.loads(agent.cli("project", "status", project, "--json").stdout)
        for key in ("workdir", "working_dir"):
            if isinstance(st.get(key), str) and st[key]:
                return st[key]
        return os.path.join(agent.data_dir, "projects", project)

    def assert_placed(self, c, placement, project):
        dcs = {a.name: a.dc for a in c.agents}
        self.assertEqual(placement["project"], project)
        replicas = placement["replicas"]
        self.assertEqual(len(replicas), 3, placement)
        self.assertEqual(len({dcs[r] for r in replicas}), 3, f"replicas not in 3 distinct DCs: {placement}")
        self.assertIn(placement["primary"], replicas)
        self.assertGreaterEqual(placement["epoch"], 1)

    def same_placement(self, a, b):
        return (a["epoch"], a["primary"], a["replicas"]) == (b["epoch"], b["primary"], b["replicas"])


class PlacementTest(PlacementHelpers, unittest.TestCase):
    def test_kill9_primary_fails_over_and_restores_byte_identical(self):
        c, agents = self.cluster(0, 6)
        names = self.by_name(c)
        subtrees = doc_subtrees(6)
        projects = [f"proj-{i:02d}" for i in range(30)]

        # Create 30 projects from real files, each through a different agent.
        created = {}
        t0 = time.monotonic()
        for i, p in enumerate(projects):
            src = os.path.join(c.root, "src", p)
            make_project_dir(src, subtrees[i % len(subtrees)], p)
            r = agents[i % 6].cli("project", "create", "--id", p, "--from", src, "--json")
            placement = json.loads(r.stdout)
            self.assert_placed(c, placement, p)
            created[p] = placement
        create_s = time.monotonic() - t0

        # Another agent answers the same committed placement.
        for i, p in enumerate(projects):
            w = self.where(agents[(i + 1) % 6], p)
            self.assertTrue(self.same_placement(w, created[p]), f"{p}: create said {created[p]}, where says {w}")

        # On each primary: the working directory holds the import; change it and save.
        expected = {}
        t0 = time.monotonic()
        for i, p in enumerate(projects):
            primary = names[self.where(agents[(i + 3) % 6], p)["primary"]]  # Found via where, not create.
            work = self.workdir(primary, p)
            src = os.path.join(c.root, "src", p)
            self.assertEqual(tree_diff(src, work), [], f"{p}: working dir on {primary.name} is not the imported tree")
            change_tree(work, p)
            saved = primary.cli("project", "save", p).stdout.strip()
            self.assertRegex(saved, r"^[0-9a-f]{16,}$")
            snap_copy = os.path.join(c.root, "expected", p)
            shutil.copytree(work, snap_copy, symlinks=True)
            expected[p] = (saved, snap_copy)
            w = self.where(agents[(i + 2) % 6], p)
            self.assertEqual(w["last_ack"]["snapshot"], saved, f"{p}: the save is not the last acknowledged snapshot")
        save_s = time.monotonic() - t0

        # Kill -9 the agent that is primary for the most projects.
        before = {p: self.where(agents[0], p) for p in projects}
        counts = {}
        for w in before.values():
            counts[w["primary"]] = counts.get(w["primary"], 0) + 1
        victim = names[max(sorted(counts), key=lambda n: counts[n])]
        affected = [p for p in projects if before[p]["primary"] == victim.name]
        survivors = [a for a in agents if a is not victim]
        victim.kill9()
        killed = time.monotonic()

        # Every affected project gets a new primary at a higher epoch, seen from a survivor.
        pending = set(affected)
        moved = {}
        while pending and time.monotonic() - killed < FAILOVER_BOUND_S:
            for p in sorted(pending):
                w = self.try_where(survivors[len(pending) % len(survivors)], p)
                if w and w["primary"] != victim.name and w["epoch"] > before[p]["epoch"]:
                    moved[p] = w
                    pending.discard(p)
            time.sleep(0.2)
        failover_s = time.monotonic() - killed
        self.assertEqual(pending, set(), f"no new primary within {FAILOVER_BOUND_S} s of kill -9 {victim.name}: "
                         f"{ {p: self.try_where(survivors[0], p) for p in sorted(pending)} }")
        for p, w in moved.items():
            self.assertIn(w["primary"], before[p]["replicas"], f"{p}: new primary was not a replica: {w}")
            self.assertEqual(w["last_ack"]["snapshot"], expected[p][0], f"{p}: acknowledged save lost: {w}")

        # Restore every project on its (new) primary: byte-identical to the last acknowledged save.
        t0 = time.monotonic()
        for p in projects:
            w = moved.get(p)
            if w is None:  # Not affected; it may still be re-making the replica the victim held.
                c.wait_for(lambda: self.try_where(survivors[0], p) is not None, 15, f"where {p} from a survivor")
                w = self.where(survivors[0], p)
            host = names[w["primary"]]
            self.assertTrue(host.running(), f"{p}: primary {host.name} is not running: {w}")
            out = os.path.join(c.root, "restored", p)
            host.cli("project", "restore", p, "--to", out)
            self.assertEqual(tree_diff(expected[p][1], out), [], f"{p}: restore on {host.name} differs")
        restore_s = time.monotonic() - t0
        print(f"\n  30 creates {create_s:.1f} s, 30 saves {save_s:.1f} s; killed {victim.name} "
              f"(primary of {len(affected)}), all moved in {failover_s:.1f} s; 30 restores {restore_s:.1f} s")

    def test_where_unknown_project_fails_cleanly(self):
        c, agents = self.cluster(1, 3)
        t0 = time.monotonic()
        r = agents[1].cli("where", "no-such-project", check=False)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(r.returncode, 1, f"stdout={r.stdout!r} stderr={r.stderr!r}")
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"no-such-project.*not[ _]found|not[ _]found.*no-such-project")
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)  # One line, no trace.
        r = agents[1].cli("where", "no-such-project", "--json", check=False)
        self.assertEqual((r.returncode, r.stdout), (1, ""))

    def test_save_on_a_non_primary_names_the_primary(self):
        c, agents = self.cluster(2, 4)  # node-3 is a second agent in dc1: one agent holds no replica.
        names = self.by_name(c)
        src = os.path.join(c.root, "src")
        make_project_dir(src, doc_subtrees(1)[0], "p")
        placement = json.loads(agents[0].cli("project", "create", "--id", "p", "--from", src, "--json").stdout)
        self.assert_placed(c, placement, "p")
        primary = placement["primary"]
        for a in agents:
            if a.name == primary:
                continue
            # Any agent forwards the save to the primary and reports its outcome.
            r = a.cli("project", "save", "p", check=False)
            role = "replica" if a.name in placement["replicas"] else "non-replica"
            self.assertEqual(r.returncode, 0, f"save on {role} {a.name}: {r.stdout!r} {r.stderr!r}")
            snap = r.stdout.strip()
            self.assertEqual(self.where(a, "p")["last_ack"]["snapshot"], snap, f"save on {role} {a.name}")
            saves = operations(a, "save", "p")
            self.assertEqual(len(saves), 1, saves)
            self.assertEqual(saves[0]["forwarded"]["to"], primary, f"save on {role} {a.name} does not name the primary")
        # And on the primary it runs there, unforwarded.
        snap = names[primary].cli("project", "save", "p").stdout.strip()
        self.assertEqual(self.where(agents[1], "p")["last_ack"]["snapshot"], snap)
        self.assertNotIn("forwarded", operations(names[primary], "save", "p")[-1])

    def test_create_prints_the_id_and_takes_a_human_quota(self):
        c, agents = self.cluster(3, 3)
        r = agents[0].cli("project", "create", "--quota", "10G")
        pid = r.stdout.strip()
        self.assertRegex(pid, r"^\S+$")
        self.assertEqual(r.stdout.count("\n"), 1)
        w = self.where(agents[2], pid)
        self.assertEqual(w["quota_bytes"], 10 << 30)
        self.assertEqual(w["last_ack"]["snapshot"], "")
        listed = json.loads(agents[0].cli("project", "list", "--json").stdout)["projects"]
        self.assertIn(pid, [p["project"] for p in listed])
        table = agents[0].cli("project", "list").stdout
        self.assertIn(pid, table.splitlines()[1] if len(table.splitlines()) > 1 else "")
        human = agents[1].cli("where", pid).stdout
        self.assertIn(f"primary {w['primary']}", human)
        r = agents[0].cli("project", "create", "--id", pid, check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("already", r.stderr)

    def test_where_without_a_majority_exits_3(self):
        c, agents = self.cluster(4, 3)
        placement = json.loads(agents[0].cli("project", "create", "--id", "p", "--json").stdout)
        self.assert_placed(c, placement, "p")
        names = self.by_name(c)
        # Kill two of the three replicas, keep one alive to ask.
        asker = names[placement["replicas"][0]]
        for r in placement["replicas"][1:]:
            names[r].kill9()
        t0 = time.monotonic()
        r = asker.cli("where", "p", check=False)
        self.assertEqual(r.returncode, 3, f"stdout={r.stdout!r} stderr={r.stderr!r}")
        self.assertTrue(r.stderr.startswith("unavailable: "), r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertLess(time.monotonic() - t0, 20)


class CliUsageTest(unittest.TestCase):
    """No agent needed: usage errors exit 2 before any request."""

    def run_shoal(self, *args):
        return subprocess.run([SHOAL, *args, "--admin", "127.0.0.1:27499"], capture_output=True, text=True, timeout=10)

    def test_help_usage_errors_and_unreachable_agent(self):
        for verb in ("create", "list", "status", "save", "snapshots", "restore"):
            r = self.run_shoal("project", verb, "--help")
            self.assertEqual(r.returncode, 0, verb)
            self.assertIn(f"shoal project {verb}", r.stdout)
        self.assertEqual(self.run_shoal("where", "--help").returncode, 0)
        for args in (("project", "create", "--quota", "10X"), ("project", "create", "--quota", "-1"),
                     ("project", "status"), ("project", "save", "a", "b"), ("project", "restore", "p"),
                     ("project", "frobnicate"), ("where",), ("where", "a/b"), ("project", "list", "--bogus")):
            r = self.run_shoal(*args)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertEqual(r.stdout, "", args)
        r = self.run_shoal("where", "p")  # Nothing listens on 27499.
        self.assertEqual(r.returncode, 2, r.stderr)


if __name__ == "__main__":
    unittest.main()
