import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, type Logger } from '../src/log';
import { createBackend, renderedBans, type KernelBan } from '../src/firewall';
import { skipUnlessRoot, withNetns } from '../tools/lab/netns';

/** A line the kernel refuses in a full load is dropped, logged, and every other ban loaded. */
const skip = skipUnlessRoot();

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}
const v4 = (address: string): KernelBan => ({ address, family: 4, until: null });

describe('full loads with a line the kernel refuses', { skip }, () => {
  test('rules: a rule iptables-restore refuses is dropped and the rest loaded', () =>
    withNetns(async (ns) => {
      const { log, lines } = captureLog();
      const fw = await createBackend('rules', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name, ipv6: false }, log);
      await fw.init();
      // A rule iptables-restore refuses, for two addresses (no address that passes the checks makes
      // one): the spec is replaced from outside, as a stand-in for any refusal it reports by line.
      const inner = fw as unknown as { spec: (a: string, f: 4 | 6) => string };
      const spec = inner.spec.bind(fw);
      inner.spec = (a, f) => (a === '192.0.2.5' || a === '192.0.2.8' ? `-s ${a}/33 -j DROP` : spec(a, f));
      const all = Array.from({ length: 10 }, (_, i) => `192.0.2.${i + 1}`);
      await fw.setAll(all.map(v4), Date.now());
      const held = (await ns.must('iptables-nft', ['-w', '-S', 'ampere'])).split('\n').filter((l) => l.includes(' -s ')).map((l) => l.split(' ')[3].replace('/32', ''));
      assert.deepEqual(held.sort(), all.filter((a) => a !== '192.0.2.5' && a !== '192.0.2.8').sort());
      assert.deepEqual(lines.filter((l) => l.msg === 'full load: the kernel refused a rule; loading the other bans without it').map((l) => l.rule), [
        '-A ampere -s 192.0.2.5/33 -j DROP', '-A ampere -s 192.0.2.8/33 -j DROP',
      ]);
      assert.match((await ns.must('iptables-nft', ['-w', '-S', 'ampere'])).trim().split('\n').at(-1)!, /-A ampere -j RETURN/);
    }));

  test('ipset: lines ipset refuses (in either loader) are dropped and the rest loaded', () =>
    withNetns(async (ns) => {
      const { log, lines } = captureLog();
      const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, log);
      await fw.init();
      const good = Array.from({ length: 6000 }, (_, i) => `198.18.${i >> 8}.${i & 255}`);
      const v4Lines = good.map((a) => `add ampere-t4 ${a} timeout 0`);
      // One early (first loader), one late (second loader): both refused by the kernel.
      v4Lines.splice(10, 0, 'add ampere-t4 0.0.0.0 timeout 0');
      v4Lines.splice(5000, 0, 'add ampere-t4 0.0.0.0 timeout 0');
      await fw.setAll(renderedBans({ 4: v4Lines.join('\n'), 6: 'add ampere-t6 2001:db8::1 timeout 0\nadd ampere-t6 :: timeout 0', count: v4Lines.length + 2 }), Date.now());
      const held = new Set(await fw.list());
      assert.equal(held.size, 6001);
      assert.ok(held.has('2001:db8::1') && !held.has('0.0.0.0') && !held.has('::'));
      const dropped = lines.filter((l) => l.msg === 'full load: the kernel refused a line; loading the other bans without it');
      assert.deepEqual(dropped.map((l) => l.line).sort(), ['add ampere-t4 0.0.0.0 timeout 0', 'add ampere-t4 0.0.0.0 timeout 0', 'add ampere-t6 :: timeout 0']);
      assert.match(String(dropped[0].refused), /Null-valued element/);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
    }));
});
