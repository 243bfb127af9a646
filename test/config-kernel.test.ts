import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../src/log';
import { createBackend } from '../src/firewall';
import { chainNameProblem } from '../src/firewall/names';
import { skipUnlessRoot, withNetns } from '../tools/lab/netns';

/** Chain names checked against the real iptables (both flavours) and ipset, in a namespace. */
const skip = skipUnlessRoot();
const log = createLogger('fatal');

const SAMPLES = [
  'ampere', '1abc', 'amp.ere', 'a-b', 'a_b', 'A', 'input', 'drop', 'x'.repeat(28), 'x'.repeat(29), '-ab', 'INPUT', 'OUTPUT',
  'FORWARD', 'PREROUTING', 'POSTROUTING', 'ACCEPT', 'DROP', 'RETURN', 'QUEUE', 'LOG', 'REJECT', 'MARK', 'NFQUEUE', 'MASQUERADE',
];

describe('chain names: what Ampere takes, the kernel tools take', { skip }, () => {
  test('every name the rule accepts works with iptables-nft, iptables-legacy and ipset; every name they refuse, the rule refuses', () =>
    withNetns(async (ns) => {
      for (const name of SAMPLES) {
        const results: boolean[] = [];
        for (const tool of ['iptables-nft', 'iptables-legacy', 'ip6tables-nft']) {
          const r = await ns.exec(tool, ['-w', '-N', name]);
          results.push(r.code === 0);
          if (r.code === 0) await ns.must(tool, ['-w', '-X', name]);
        }
        for (const set of [`${name}-v4`, `${name}-t6`]) {
          const r = await ns.exec('ipset', ['create', set, 'hash:ip']);
          results.push(r.code === 0);
          if (r.code === 0) await ns.must('ipset', ['destroy', set]);
        }
        const kernelTakes = results.every(Boolean);
        if (chainNameProblem(name) === null) assert.ok(kernelTakes, `${name}: accepted by Ampere, so by every tool (${results})`);
        if (!kernelTakes) assert.notEqual(chainNameProblem(name), null, `${name}: refused by a tool, so by Ampere`);
      }
    }));

  for (const kind of ['ipset', 'rules'] as const) {
    test(`${kind}: a backend on the chains 1abc and amp.ere loads and holds a ban`, () =>
      withNetns(async (ns) => {
        for (const chain of ['1abc', 'amp.ere']) {
          const fw = await createBackend(kind, { chain, target: 'DROP', iptables: 'nft', netns: ns.name }, log);
          await fw.init();
          await fw.setAll([{ address: '192.0.2.1', family: 4, until: null }, { address: '2001:db8::1', family: 6, until: null }], Date.now());
          await fw.add([{ address: '192.0.2.2', family: 4, until: null }], Date.now());
          assert.deepEqual((await fw.list()).sort(), ['192.0.2.1', '192.0.2.2', '2001:db8::1']);
          assert.match(await ns.must('iptables-nft', ['-w', '-S', 'INPUT']), new RegExp(`-A INPUT -j ${chain.replace('.', '\\.')}`));
          await fw.shutdown();
        }
      }));
  }
});
