import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FirewallBackend } from '../src/firewall';
import { countingFailures } from '../src/metrics/firewall';

test('countingFailures: failed backend calls are counted and still rejected; name and netns pass through', async () => {
  const failed: string[] = [];
  const backend = { name: 'ipset', netns: 'x', init: async () => {}, setAll: async () => { throw new Error('boom'); }, add: async () => {}, remove: async () => { throw new Error('gone'); }, list: async () => ['1.2.3.4'], shutdown: async () => {} } as FirewallBackend;
  const b = countingFailures(backend, (op) => failed.push(op));
  assert.equal(b.name, 'ipset');
  assert.equal(b.netns, 'x');
  await b.add([], 0);
  await assert.rejects(b.setAll([], 0), /boom/);
  await assert.rejects(b.remove([]), /gone/);
  assert.deepEqual(await b.list(), ['1.2.3.4']);
  assert.deepEqual(failed, ['setAll', 'remove']);
  // Whether the queue may pipeline passes through too (it lost the daemon its pipelining once).
  assert.equal(b.pipelines, undefined);
  const piped = countingFailures({ ...backend, pipelines: (n: number) => n <= 2 }, () => {});
  assert.equal(piped.pipelines?.(2), true);
  assert.equal(piped.pipelines?.(3), false);
  // So do the full load as lines and its format; a failed one counts as a failed setAll.
  assert.equal(b.setAllLines, undefined);
  const format = { prefix: { 4: 'add a ', 6: 'add b ' }, infix: ' timeout ', maxSeconds: 1 };
  const loaded: unknown[] = [];
  const texty = countingFailures({ ...backend, lineFormat: format, setAllLines: async (l: unknown) => { loaded.push(l); if (loaded.length > 1) throw new Error('bad line'); } }, (op) => failed.push(op));
  assert.equal(texty.lineFormat, format);
  await texty.setAllLines!({ 4: 'add a 192.0.2.1 timeout 0', 6: '', count: 1 });
  await assert.rejects(texty.setAllLines!({ 4: '', 6: '', count: 0 }), /bad line/);
  assert.deepEqual(loaded, [{ 4: 'add a 192.0.2.1 timeout 0', 6: '', count: 1 }, { 4: '', 6: '', count: 0 }]);
  assert.deepEqual(failed, ['setAll', 'remove', 'setAll']);
});
