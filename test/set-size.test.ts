import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, type Logger } from '../src/log';
import { createBackend, type KernelBan } from '../src/firewall';
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
const nth = (n: number) => `198.18.${n >> 8}.${n & 255}`;

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
});
