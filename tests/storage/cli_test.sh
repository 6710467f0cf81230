#!/usr/bin/env bash
# tests/storage/cli_test.sh SHOAL: `shoal snapshot` end to end through the binary:
# create/list/show/diff/restore/verify (exit codes 0/1/2)/prune/gc/stats/quota.
set -u
SHOAL=$1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() { local want=$1; shift; "$@" >"$W/out" 2>"$W/err"; local rc=$?; [ "$rc" = "$want" ] || { cat "$W/err" >&2; fail "rc $rc (want $want): $*"; }; }

mkdir -p "$W/src/d" "$W/src/empty"
printf 'hello\n' >"$W/src/a"
head -c 300000 /dev/urandom >"$W/src/d/big"
ln -s a "$W/src/link"
chmod 0751 "$W/src/d"

expect_rc 0 "$SHOAL" snapshot create --store "$W/st" --project demo "$W/src"
ID1=$(cat "$W/out")
[ ${#ID1} = 64 ] || fail "create did not print a 64-hex id: $ID1"
expect_rc 0 "$SHOAL" snapshot create --store "$W/st" --project demo "$W/src" --json
python3 -c "import json,sys; j=json.load(open('$W/out')); assert j['project']=='demo' and j['files']==2 and j['logical_bytes']==300006 and 'new_bytes' in j and len(j['id'])==64" || fail "create --json"
expect_rc 0 "$SHOAL" snapshot list --store "$W/st" --project demo --json
python3 -c "import json; assert len(json.load(open('$W/out')))==2" || fail "list --json"
expect_rc 0 "$SHOAL" snapshot show --store "$W/st" "$ID1"
grep -q "project:       demo" "$W/out" || fail "show"
printf 'changed\n' >"$W/src/a"
expect_rc 0 "$SHOAL" snapshot create --store "$W/st" --project demo "$W/src"
expect_rc 0 "$SHOAL" snapshot diff --store "$W/st" --project demo "$ID1" latest
grep -qx "M a" "$W/out" || fail "diff did not list 'M a'"
expect_rc 0 "$SHOAL" snapshot restore --store "$W/st" --project demo --snapshot "${ID1:0:12}" --to "$W/out1"
diff -r --no-dereference "$W/out1/d" "$W/src/d" >/dev/null || fail "restored tree differs"
[ "$(cat "$W/out1/a")" = hello ] || fail "restored old contents"
[ "$(stat -c %a "$W/out1/d")" = 751 ] || fail "restored mode"
[ "$(readlink "$W/out1/link")" = a ] || fail "restored symlink"
expect_rc 2 "$SHOAL" snapshot restore --store "$W/st" --project demo --to "$W/out1"
grep -q -- "--force" "$W/err" || fail "overwrite refusal should mention --force"
expect_rc 0 "$SHOAL" snapshot restore --store "$W/st" --project demo --to "$W/out1" --force
expect_rc 0 "$SHOAL" snapshot verify --store "$W/st"
# Concurrency is covered by storage_test; quotas:
expect_rc 0 "$SHOAL" snapshot quota set --store "$W/st" --project demo --live 1K
expect_rc 2 "$SHOAL" snapshot create --store "$W/st" --project demo "$W/src"
grep -q "project 'demo'" "$W/err" && grep -q "1.0 KiB" "$W/err" || fail "quota message"
expect_rc 0 "$SHOAL" snapshot quota set --store "$W/st" --project demo --live 0
expect_rc 0 "$SHOAL" snapshot prune --store "$W/st" --project demo --keep-last 1
expect_rc 0 "$SHOAL" snapshot gc --store "$W/st" --json
python3 -c "import json; assert json.load(open('$W/out'))['chunks_removed']>0" || fail "gc removed nothing"
expect_rc 0 "$SHOAL" snapshot stats --store "$W/st" --json
python3 -c "import json; j=json.load(open('$W/out')); assert j['snapshots']==1 and j['unreferenced_chunks']==0" || fail "stats"
# Damage: flip a byte of d/big's stored (raw, since random) data in its pack
# file; verify must name it.
python3 - "$W/st/packs" "$W/src/d/big" <<'PY' || fail "could not find the chunk bytes in a pack file"
import os, sys
packs, src = sys.argv[1], sys.argv[2]
needle = open(src, 'rb').read()[1000:1064]
for name in os.listdir(packs):
    path = os.path.join(packs, name)
    b = bytearray(open(path, 'rb').read())
    i = b.find(needle)
    if i >= 0:
        b[i + 10] ^= 0x01
        open(path, 'wb').write(b)
        sys.exit(0)
sys.exit(1)
PY
expect_rc 1 "$SHOAL" snapshot verify --store "$W/st"
grep -q "file d/big chunk" "$W/out" || fail "verify did not name d/big"
expect_rc 1 "$SHOAL" snapshot restore --store "$W/st" --project demo --to "$W/out2"
grep -q "damaged, not restored: d/big" "$W/err" || fail "restore did not report d/big"
[ "$(cat "$W/out2/a")" = changed ] || fail "restore did not restore the undamaged rest"
# Names with a newline, invalid UTF-8 and a backslash, and 0-byte files: saved
# and restored exactly; text output quotes such names (git style), JSON adds path_hex.
mkdir -p "$W/odd"
printf 'p' >"$W/odd/plain"
expect_rc 0 "$SHOAL" snapshot create --store "$W/st2" --project odd "$W/odd"
printf 'x' >"$W/odd/$(printf 'new\nline')"
printf 'y' >"$W/odd/$(printf 'bad\377\376')"
printf 'w' >"$W/odd/back\\slash"
: >"$W/odd/empty"
mkdir "$W/odd/$(printf 'dir\nname')"
: >"$W/odd/$(printf 'dir\nname')/empty2"
expect_rc 0 "$SHOAL" snapshot create --store "$W/st2" --project odd "$W/odd"
LIST=$("$SHOAL" snapshot list --store "$W/st2" --project odd --json | python3 -c "import json,sys; print(' '.join(s['id'] for s in json.load(sys.stdin)))")
read -r O1 O2 <<<"$LIST"
expect_rc 0 "$SHOAL" snapshot diff --store "$W/st2" "$O1" "$O2"
[ "$(wc -l <"$W/out")" = 6 ] || { cat "$W/out" >&2; fail "diff of odd names should be 6 lines"; }
grep -qxF '+ "new\nline"' "$W/out" || fail "newline name not quoted in diff"
grep -qxF '+ "bad\377\376"' "$W/out" || fail "invalid UTF-8 name not quoted in diff"
grep -qxF '+ "back\\slash"' "$W/out" || fail "backslash name not quoted in diff"
grep -qxF '+ "dir\nname/"' "$W/out" || fail "newline directory not quoted in diff"
grep -qxF '+ "dir\nname/empty2"' "$W/out" || fail "file below a newline directory"
grep -qxF '+ empty' "$W/out" || fail "0-byte file missing from diff"
expect_rc 0 "$SHOAL" snapshot diff --store "$W/st2" "$O1" "$O2" --json
python3 -c "
import json; d = json.load(open('$W/out'))
assert any(e.get('path_hex') == b'bad\xff\xfe'.hex() for e in d), d
assert any(e['path'] == 'new\nline' and 'path_hex' not in e for e in d), d" || fail "diff --json of odd names"
expect_rc 0 "$SHOAL" snapshot restore --store "$W/st2" --project odd --to "$W/odd_out"
diff -r --no-dereference "$W/odd" "$W/odd_out" >/dev/null || fail "odd names restored differently"
[ -f "$W/odd_out/empty" ] && [ ! -s "$W/odd_out/empty" ] || fail "0-byte file not restored as 0 bytes"
[ "$(find "$W/odd_out" | wc -l)" = "$(find "$W/odd" | wc -l)" ] || fail "entry count differs after restore"
expect_rc 2 "$SHOAL" snapshot verify --store "$W/nope"
expect_rc 2 "$SHOAL" snapshot create --store "$W/st" --project "bad name" "$W/src"
expect_rc 0 "$SHOAL" snapshot --help
echo PASS
