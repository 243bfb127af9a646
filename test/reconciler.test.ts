import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SecurityHearing, SECURITY_EVENT_GRACE_MS } from '../src/ami/heard';
import { Reconciler, type ReconcilerDeps } from '../src/firewall/reconciler';
import { chainView, countDrifts, parseSetHeaders, setView, type KernelView } from '../src/firewall/verify';
import { createLogger } from '../src/log';

/** `ipset list -t` as ipset 7.17 prints it (two sets). */
const HEADERS = `Name: ampere-v4
Type: hash:ip
Revision: 6
Header: family inet hashsize 4096 maxelem 1048576 timeout 0 bucketsize 12 initval 0x3b0c8ebb
Size in memory: 280
References: 1
Number of entries: 3

Name: ampere-v6
Type: hash:net
Revision: 7
Header: family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x11
Size in memory: 280
References: 0
Number of entries: 0
`;

test('set headers: members counted, a set of another type or without timeouts is drift', () => {
  const h = parseSetHeaders(HEADERS);
  assert.deepEqual(setView(h, 'ampere-v4', 4), { count: { family: 4, count: 3, where: 'ampere-v4' }, maxelem: 1048576 });
  assert.equal(setView(h, 'ampere-v4', 6).drift?.detail, 'set ampere-v4 has the wrong type (hash:ip family inet)');
  assert.equal(setView(h, 'ampere-v6', 6).drift?.detail, 'set ampere-v6 has the wrong type (hash:net family inet6)');
  assert.deepEqual(setView(h, 'other', 4).drift, { what: 'set', family: 4, detail: 'set other missing' });
  // Hostile set names or a cut listing never throw.
  assert.equal(parseSetHeaders('Name: x\nNumber of entries: lots\n').get('x')!.entries, NaN);
  assert.deepEqual(setView(parseSetHeaders('Name: x\nType: hash:ip\nHeader: family inet timeout 0\n'), 'x', 4), {});
});

test('chain listing: jump anywhere counts, flushed, missing and changed chains are told apart', () => {
  const ok = (r: string, last: boolean) => (last ? r === '-j RETURN' : r.startsWith('-m set'));
  const base = ['-P INPUT ACCEPT', '-N ampere', '-N mine'];
  const rules = ['-A ampere -m set --match-set ampere-v4 src -j DROP', '-A ampere -j RETURN'];
  assert.deepEqual(chainView([...base, '-A INPUT -j ampere', ...rules], 'ampere', '', 4, ok, 2).drifts, []);
  assert.deepEqual(chainView([...base, '-A mine -p udp --dport 5060 -j ampere', ...rules], 'ampere', '', 4, ok, 2).drifts, [], "an operator's jump elsewhere");
  assert.deepEqual(chainView([...base, ...rules], 'ampere', '', 4, ok, 2).drifts.map((d) => d.detail), ['jump missing from INPUT']);
  assert.deepEqual(chainView([...base, '-A INPUT -j ampere'], 'ampere', '', 4, ok, 2).drifts.map((d) => d.detail), ['chain ampere flushed']);
  assert.deepEqual(chainView([...base, '-A INPUT -j ampere', rules[1]], 'ampere', '', 4, ok, 2).drifts.map((d) => d.detail), ['rules of chain ampere changed']);
  assert.deepEqual(chainView([...base, '-A INPUT -j ampere', rules[1], rules[0]], 'ampere', '', 4, ok, 2).drifts.map((d) => d.detail), ['rules of chain ampere changed'], 'RETURN not last');
  assert.deepEqual(chainView(['-P INPUT ACCEPT'], 'ampere', '', 6, ok).drifts.map((d) => `${d.what} ${d.detail}`), ['chain chain ampere missing', 'jump jump missing from INPUT']);
});

test('counts: the kernel may lack only bans whose time is over; more than the bans is drift', () => {
  const counts = [{ family: 4 as const, count: 8, where: 'ampere-v4' }];
  assert.deepEqual(countDrifts(counts, { 4: 8, 6: 0 }, () => 0), []);
  assert.deepEqual(countDrifts(counts, { 4: 10, 6: 0 }, () => 2), [], 'two ended bans the kernel expired first');
  assert.deepEqual(countDrifts(counts, { 4: 10, 6: 0 }, () => 1).map((d) => d.detail), ['2 of 10 bans missing from ampere-v4']);
  assert.deepEqual(countDrifts(counts, { 4: 7, 6: 0 }, () => 0).map((d) => d.detail), ['1 entries in ampere-v4 that are not bans']);
});

test('counts: with more bans than the hosts\' set holds (set_size), missing ones are no drift; within it they are', () => {
  const full = [{ family: 4 as const, count: 65_536, where: 'ampere-n4 + ampere-v4', capacity: 65_536 }];
  assert.deepEqual(countDrifts(full, { 4: 70_000, 6: 0 }, () => 0), [], 'a full set is not repaired in a loop');
  assert.deepEqual(countDrifts([{ ...full[0], count: 60_000 }], { 4: 70_000, 6: 0 }, () => 0), [], 'nor one that bans ending have thinned');
  assert.deepEqual(countDrifts([{ ...full[0], count: 60_000 }], { 4: 65_536, 6: 0 }, () => 0).map((d) => d.detail), ['5536 of 65536 bans missing from ampere-n4 + ampere-v4']);
  assert.deepEqual(countDrifts([{ ...full[0], count: 70_001 }], { 4: 70_000, 6: 0 }, () => 0).map((d) => d.detail), ['1 entries in ampere-n4 + ampere-v4 that are not bans']);
  // maxelem is read from the header, whatever set_size says now.
  const h = parseSetHeaders(HEADERS.replace('maxelem 1048576', 'maxelem 65536'));
  assert.equal(setView(h, 'ampere-v4', 4).maxelem, 65536);
  assert.equal(setView(h, 'ampere-v4', 4).drift, undefined, 'another maxelem is no drift');
});

/** A scripted kernel and queue around a Reconciler; views[i] answers the i-th look (the last one repeats). */
function rig(views: (KernelView | Error)[], opts: { banned?: number; ended?: number; repairFails?: boolean } = {}) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) });
  const queue = { healthy: true, generation: 0, loads: 0, loading: 0, quiet: true };
  let looks = 0;
  const repaired: string[] = [];
  let repairs = 0;
  const deps: ReconcilerDeps = {
    backend: {
      verifiable: true,
      inspect: async () => {
        const v = views[Math.min(looks++, views.length - 1)];
        if (v instanceof Error) throw v;
        return structuredClone(v);
      },
    },
    queue,
    banned: () => ({ v4: opts.banned ?? 3, v6: 0 }),
    endedBy: () => opts.ended ?? 0,
    repair: async () => { repairs++; queue.generation++; queue.loads++; if (opts.repairFails) queue.healthy = false; else queue.healthy = true; },
    log,
    onRepair: (what) => repaired.push(what),
  };
  const r = new Reconciler(deps, 200);
  return { r, queue, lines, repaired, get repairs() { return repairs; }, get looks() { return looks; } };
}
const good: KernelView = { drifts: [], counts: [{ family: 4, count: 3, where: 'ampere-v4' }] };
const noJump: KernelView = { drifts: [{ what: 'jump', family: 4, detail: 'jump missing from INPUT' }], counts: good.counts };
const flushed: KernelView = { drifts: [], counts: [{ family: 4, count: 0, where: 'ampere-v4' }] };
const warnings = (lines: Record<string, unknown>[]) => lines.filter((l) => String(l.msg).startsWith('firewall drift:'));

test('reconciler: drift seen twice is repaired once, told in one warning, counted; a clean kernel stays quiet', async () => {
  const k = rig([good, noJump, noJump, good]);
  await k.r.check();
  assert.equal(k.repairs, 0);
  await k.r.check();
  assert.equal(k.repairs, 1);
  assert.deepEqual(k.repaired, ['jump']);
  assert.deepEqual(warnings(k.lines).map((l) => [l.level, String(l.msg).replace(/\d+ ms/, 'N ms')]), [[40, 'firewall drift: jump missing from INPUT (v4); repaired in N ms']]);
  assert.equal(k.r.drifting, false);
  assert.deepEqual([k.r.state.repairs, k.r.state.lastDrift?.what], [1, 'jump missing from INPUT (v4)']);
  await k.r.check();
  assert.equal(k.repairs, 1);
  assert.equal(warnings(k.lines).length, 1);
});

test('reconciler: a change half made (seen once, gone at the second look) is not repaired', async () => {
  const k = rig([noJump, good]);
  await k.r.check();
  assert.deepEqual([k.repairs, k.looks, warnings(k.lines).length, k.r.drifting], [0, 2, 0, false]);
});

test('reconciler: counts are compared only when no kernel command ran during the look', async () => {
  const k = rig([flushed]);
  k.queue.quiet = false; // a ban in flight
  await k.r.check();
  assert.equal(k.repairs, 0);
  k.queue.quiet = true;
  // A ban taken while the kernel was read: the count it saw may be before or after it.
  const inspect = k.r['d'].backend.inspect!;
  k.r['d'].backend.inspect = async () => { k.queue.generation++; return inspect(); };
  await k.r.check();
  assert.equal(k.repairs, 0);
  k.r['d'].backend.inspect = inspect;
  await k.r.check();
  assert.equal(k.repairs, 1);
  assert.deepEqual(k.repaired, ['entries']);
});

test('reconciler: bans whose time is over may be gone from the kernel first; structure is not judged during a full load', async () => {
  const k = rig([flushed], { banned: 3, ended: 3 });
  await k.r.check();
  assert.equal(k.repairs, 0);
  const j = rig([noJump]);
  j.queue.loading = 1;
  await j.r.check();
  assert.equal(j.repairs, 0);
});

test('reconciler: a repair that does not mend is told once as an error, retried with backoff, health stays false', async () => {
  const k = rig([noJump], { repairFails: true });
  await k.r.check();
  assert.equal(k.r.drifting, true);
  assert.equal(k.repairs, 1);
  await k.r.check(); // within the backoff: no second reload
  assert.equal(k.repairs, 1);
  assert.equal(k.r.drifting, true);
  k.r['retryAt'] = 0;
  await k.r.check();
  assert.equal(k.repairs, 2);
  const errors = k.lines.filter((l) => String(l.msg).includes('NOT repaired'));
  assert.equal(errors.length, 1, 'told once');
  assert.equal(errors[0].level, 50);
  assert.equal(k.r.state.lastDrift?.repairMs, null);
});

test('reconciler: a failed kernel command is repaired even when the look finds nothing; an unreadable kernel is told once', async () => {
  const k = rig([good]);
  k.queue.healthy = false;
  await k.r.check();
  assert.deepEqual(k.repaired, ['failed-batch']);
  assert.equal(k.queue.healthy, true);
  assert.match(String(warnings(k.lines)[0].msg), /^firewall drift: a kernel command failed; repaired in \d+ ms$/);
  const u = rig([new Error('iptables: not found')]);
  await u.r.check();
  await u.r.check();
  assert.equal(u.lines.filter((l) => l.msg === 'firewall check could not read the kernel').length, 1);
  assert.equal(u.repairs, 0);
});

test('security events: silence past the grace after a login is a health problem naming the fix; any event clears it', () => {
  const h = new SecurityHearing();
  assert.equal(h.problem(10_000, 'ampere', true), null, 'not logged in yet');
  h.loggedIn(1_000);
  assert.equal(h.problem(1_000 + SECURITY_EVENT_GRACE_MS - 1, 'ampere', true), null, 'within the grace');
  assert.match(h.problem(1_000 + SECURITY_EVENT_GRACE_MS + 2_000, 'ampere', true)!, /no security event heard since the AMI login 7 s ago: give the AMI user "ampere" "read = security" in manager.conf/);
  assert.equal(h.problem(99_000, 'ampere', false), null, 'disconnected: the AMI problem says enough');
  h.heard(2_000);
  assert.equal(h.problem(99_000, 'ampere', true), null);
  h.loggedIn(100_000); // a reconnect: the new login must be heard again
  assert.notEqual(h.problem(110_000, 'ampere', true), null);
});
