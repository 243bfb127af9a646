import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { LegacySignature } from '../src/firewall/legacy-sig';
import { Netns, skipUnlessRoot } from '../tools/lab/netns';

/**
 * The legacy-iptables signature the firewall check lists by: it must change with every rule
 * change of either family (a deleted jump, a flushed chain, an equal-size replacement) and
 * stay the same when only packet counters move. Real legacy tables in a namespace.
 */
const skip = skipUnlessRoot();

let ns: Netns;
let sig: LegacySignature;
before(async () => {
  if (skip) return;
  ns = await Netns.create();
  for (const ipt of ['iptables-legacy', 'ip6tables-legacy']) {
    await ns.must(ipt, ['-w', '-N', 'ampere']);
    await ns.must(ipt, ['-w', '-A', 'ampere', '-j', 'RETURN']);
    await ns.must(ipt, ['-w', '-I', 'INPUT', '1', '-j', 'ampere']);
  }
  sig = new LegacySignature(ns.name);
});
after(async () => {
  sig?.close();
  await ns?.destroy();
});

test('legacy signature: every rule change of either family moves it; traffic alone does not', { skip }, async () => {
  const first = await sig.query();
  assert.match(String(first), /^\d+:\d+$/);
  assert.equal(await sig.query(), first, 'nothing changed');

  // Packets through INPUT move the counters (checked), not the signature.
  const counters = async () => (await ns.must('iptables-legacy', ['-w', '-L', 'INPUT', '-v', '-x', '-n'])).split('\n').find((l) => / ampere /.test(l))!.trim().split(/\s+/)[0];
  const c0 = await counters();
  await ns.must(process.execPath, ['-e', "const s = require('dgram').createSocket('udp4'); s.send('x', 9, '127.0.0.1', () => s.close())"]);
  assert.notEqual(await counters(), c0, 'the packet was counted');
  assert.equal(await sig.query(), first, 'counters are not a change');

  const seen = new Set([first]);
  const changes: [string, string[]][] = [
    ['iptables-legacy', ['-D', 'INPUT', '-j', 'ampere']],
    ['ip6tables-legacy', ['-F', 'ampere']],
    ['ip6tables-legacy', ['-A', 'ampere', '-j', 'DROP']],
    // Same size as the rule it replaces: only the content differs.
    ['ip6tables-legacy', ['-R', 'ampere', '1', '-j', 'ACCEPT']],
    ['iptables-legacy', ['-I', 'INPUT', '1', '-j', 'ampere']],
  ];
  for (const [ipt, args] of changes) {
    await ns.must(ipt, ['-w', ...args]);
    const now = await sig.query();
    assert.ok(now !== null && !seen.has(now), `${ipt} ${args.join(' ')} moves the signature (${now})`);
    seen.add(now);
    assert.equal(await sig.query(), now, 'and it stays until the next change');
  }
});

test('legacy signature: unknown (null) once closed, so the caller lists', { skip }, async () => {
  const s = new LegacySignature(ns.name);
  assert.notEqual(await s.query(), null);
  s.close();
  assert.equal(await s.query(), null);
});
