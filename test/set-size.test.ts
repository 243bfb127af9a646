import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSetSize } from '../src/cli/check-sets';
import { Store } from '../src/store';
import { createLogger, type Logger } from '../src/log';
import { createBackend, FirewallQueue, renderedBans, type KernelBan } from '../src/firewall';
import { setFullStats } from '../src/firewall/set-full';
import { countDrifts } from '../src/firewall/verify';
import { createLine, RANGE_MAXELEM } from '../src/firewall/ipset-sets';
import { SET_SIZE_DEFAULT } from '../src/firewall/set-size';
import { skipUnlessRoot, withNetns, type Netns } from '../tools/lab/netns';

/** set_size: the hosts' sets' maxelem, what a change of it does, and a set that is full. */
const skip = skipUnlessRoot();

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}
const v4 = (address: string): KernelBan => ({ address, family: 4, until: null });
const v6 = (address: string): KernelBan => ({ address, family: 6, until: null });
/** The n-th address of 198.18.0.0/15 (n < 131072). */
const nth = (n: number) => `198.${18 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

/** maxelem of each of the chain's live sets, read from the kernel. */
async function maxelems(ns: Netns, chain = 'ampere'): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const set of ['v4', 'v6', 'n4', 'n6'].map((s) => `${chain}-${s}`)) {
    out[set] = Number(/maxelem (\d+)/.exec(await ns.must('ipset', ['list', '-t', set]))![1]);
  }
  return out;
}

test('createLine: the hosts\' sets take set_size (default 1048576), the ranges\' sets keep their own bound', () => {
  assert.equal(createLine('ampere-v4', { family: 4, range: false }, 4096), 'create ampere-v4 hash:ip family inet hashsize 4096 maxelem 1048576 timeout 0');
  assert.equal(SET_SIZE_DEFAULT, 1_048_576);
  assert.equal(createLine('ampere-t6', { family: 6, range: false }, 1024, 65536), 'create ampere-t6 hash:ip family inet6 hashsize 1024 maxelem 65536 timeout 0');
  assert.equal(createLine('ampere-n4', { family: 4, range: true }, 64, 16_777_216), `create ampere-n4 hash:net family inet hashsize 64 maxelem ${RANGE_MAXELEM} timeout 0`);
});

test('ampere check: more hosts banned in the database than set_size is a problem, naming set_size; ranges and ended bans do not count', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-setsize-'));
  try {
    const db = join(dir, 'ampere.db');
    assert.equal(checkSetSize({ db, set_size: 65536 }), null, 'no database yet');
    const store = new Store(db, 20);
    const now = Date.now();
    const ban = (address: string, until: number | null) => store.bans.recordBan({ address, family: address.includes(':') ? 6 : 4, now, until, reasonKind: 'x', reasonService: '', reasonAccount: '', failures: 3, source: 'auto' });
    for (const a of ['192.0.2.1', '192.0.2.2', '192.0.2.3', '2001:db8::1']) ban(a, null);
    ban('198.51.100.0/24', null);
    ban('192.0.2.4', now + 1000);
    store.close();
    assert.deepEqual(checkSetSize({ db, set_size: 4 }, now), { name: 'set size', result: 'ok', detail: "4 IPv4 and 1 IPv6 hosts banned in the database; each family's set holds 4 (set_size)" });
    assert.deepEqual(checkSetSize({ db, set_size: 4 }, now + 2000)?.detail, "3 IPv4 and 1 IPv6 hosts banned in the database; each family's set holds 4 (set_size)", 'the ended one not counted');
    const over = checkSetSize({ db, set_size: 3 }, now)!;
    assert.equal(over.result, 'fail');
    assert.equal(over.detail, '4 IPv4 hosts banned in the database, more than set_size 3: the kernel\'s set cannot hold them all (the rest stay out, logged); raise set_size (at most 16777216)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('set_size in the kernel', { skip }, () => {
  test('a backend with set_size 65536 makes its hosts\' sets with that maxelem, at init and at each full load', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name, setSize: 65536 }, captureLog().log);
      await fw.init();
      const want = { 'ampere-v4': 65536, 'ampere-v6': 65536, 'ampere-n4': RANGE_MAXELEM, 'ampere-n6': RANGE_MAXELEM };
      assert.deepEqual(await maxelems(ns), want, 'init');
      await fw.setAll([v4('192.0.2.1'), v6('2001:db8::1')], Date.now());
      assert.deepEqual(await maxelems(ns), want, 'after the swap of a full load');
      assert.deepEqual((await fw.list()).sort(), ['192.0.2.1', '2001:db8::1']);
      await fw.shutdown();
    }));

  test('a start with another set_size: init keeps the live sets, the full load swaps in sets of the new maxelem with every ban', () =>
    withNetns(async (ns) => {
      const bans = [...Array.from({ length: 3000 }, (_, i) => v4(nth(i))), v6('2001:db8::1'), v6('2001:db8::2')];
      const want = bans.map((b) => b.address).sort();
      const first = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await first.init();
      await first.setAll(bans, Date.now());
      await first.shutdown();
      let size = 1_048_576;
      for (const next of [65536, 2_000_000, 1_048_576]) {
        const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name, setSize: next }, captureLog().log);
        await fw.init();
        // ipset swap takes two sets of one type and family whatever their maxelem: init leaves
        // the live ones (the rules use them) with their bans, the load replaces them.
        assert.equal((await maxelems(ns))['ampere-v4'], size, `${size} -> ${next}: init leaves the live set`);
        assert.deepEqual((await fw.list()).sort(), want, 'and its bans');
        await fw.setAll(bans, Date.now());
        const got = await maxelems(ns);
        assert.deepEqual([got['ampere-v4'], got['ampere-v6']], [next, next], `${size} -> ${next}`);
        assert.deepEqual((await fw.list()).sort(), want, `${size} -> ${next}: every ban`);
        assert.deepEqual((await fw.inspect()).drifts, [], 'a set of another maxelem is no drift');
        await fw.shutdown();
        size = next;
      }
    }));

  test('a full set: the load keeps set_size bans and says so once, naming set_size; a ban that does not fit is counted, no failure', () =>
    withNetns(async (ns) => {
      const { log, lines } = captureLog();
      const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name, setSize: 65536 }, log);
      await fw.init();
      const queue = new FirewallQueue(fw, log);
      const told = () => lines.filter((l) => /^ipset set ampere-v4 is full/.test(String(l.msg)));
      const counted = setFullStats.leftOut;
      const v4s = Array.from({ length: 65536 + 100 }, (_, i) => nth(i));
      // Rendered lines (the store's way), 100 more than the set holds.
      await queue.setAll(renderedBans({ 4: v4s.map((a) => `add ampere-t4 ${a} timeout 0`).join('\n'), 6: 'add ampere-t6 2001:db8::1 timeout 0', count: v4s.length + 1 }));
      assert.equal(queue.healthy, true, `the load succeeded: ${queue.lastError} ${JSON.stringify(lines.filter((l) => (l.level as number) >= 40))}`.slice(0, 3000));
      const held = await fw.list();
      assert.equal(held.length, 65536 + 1, 'the set full, and the other family loaded');
      assert.ok(held.includes('2001:db8::1'));
      assert.equal(told().length, 1);
      assert.equal(told()[0].level, 50, 'at error');
      assert.equal(told()[0].msg, 'ipset set ampere-v4 is full at set_size 65536: 100 bans left out of the kernel, kept in the database; raise set_size');
      assert.deepEqual([told()[0].leftOut, told()[0].maxelem, told()[0].during], [100, 65536, 'full load']);
      assert.equal(setFullStats.leftOut - counted, 100);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/, 'no scratch set left');
      // The firewall check reads maxelem: the bans left out are no drift to repair in a loop.
      const view = await fw.inspect();
      assert.deepEqual(view.drifts, []);
      assert.deepEqual(view.counts.map((c) => [c.family, c.count, c.capacity]), [[4, 65536, 65536], [6, 1, 65536]]);
      assert.deepEqual(countDrifts(view.counts, { 4: 65636, 6: 1 }, () => 0), []);

      // New bans while full: the kernel takes a few more than maxelem (it counts per region of
      // its hash) and refuses the rest; those are counted and said at debug only, the batch does
      // not fail, and the other family's ban of the batch is in.
      const entries = async () => Number(/Number of entries: (\d+)/.exec(await ns.must('ipset', ['list', '-t', 'ampere-v4']))![1]);
      const fresh = Array.from({ length: 50 }, (_, i) => `192.0.2.${i + 1}`);
      await queue.add([...fresh.map((a) => v4(a)), v6('2001:db8::2')]);
      assert.equal(queue.healthy, true, 'no failed batch (no repair, no loop)');
      const taken = (await entries()) - 65536;
      assert.ok(taken < 50, `the kernel refused some (${taken} of 50 taken)`);
      assert.ok((await fw.list()).includes('2001:db8::2'));
      assert.equal(setFullStats.leftOut - counted, 100 + 50 - taken);
      assert.equal(told().length, 2);
      assert.deepEqual([told()[1].level, told()[1].during, told()[1].leftOut], [20, 'ban', 50 - taken]);
      // A ban already in the set is refreshed, full or not.
      await queue.add([{ address: nth(1), family: 4, until: Date.now() + 60_000 }]);
      assert.equal(queue.healthy, true);
      assert.match(await ns.must('ipset', ['save', 'ampere-v4']), new RegExp(`add ampere-v4 ${nth(1).replace(/\./g, '\\.')} timeout (59|60)\n`));

      // A load that fits ends the full state; the next full one is said again (bans read one by one).
      await queue.setAll(v4s.slice(0, 1000).map(v4));
      assert.equal((await fw.list()).length, 1000);
      await queue.setAll(v4s.map(v4));
      assert.equal(queue.healthy, true);
      assert.equal((await fw.list()).length, 65536);
      assert.equal(told().filter((l) => l.level === 50).length, 2, 'said again after a load that fitted');
      assert.equal(lines.filter((l) => l.msg === 'firewall setAll failed' || l.msg === 'firewall add failed').length, 0);
      await fw.shutdown();
    }));
});
