import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { heapProblem } from '../src/cli/run';
import { LAUNCH_HEAP_LIMIT_MB, LAUNCH_SEMI_SPACE_MB, maxHostsFor, tableHeapBytes } from '../src/cli/heap';
import { LAUNCH_HEAP_FLAGS } from '../src/cli/launch';
import { ampere } from './helpers/cli';
import { skipUnlessRoot, withNetns } from '../tools/lab/netns';

const MB = 1024 * 1024;

for (const loyalty of [1, 3, 10]) {
  test(`the table's heap estimate holds a real table at its worst (loyalty ${loyalty}), without gross overstatement`, () => {
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(__dirname, 'helpers', 'table-heap.ts'), String(loyalty), '50000'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const m = JSON.parse(r.stdout) as { hosts: number; bytesPerHost: number };
    assert.equal(m.hosts, 50_000, 'every host kept, none banned');
    const estimate = tableHeapBytes(1, loyalty);
    assert.ok(m.bytesPerHost <= estimate, `measured ${m.bytesPerHost.toFixed(0)} B a host > estimate ${estimate}`);
    assert.ok(estimate <= 1.35 * m.bytesPerHost, `estimate ${estimate} B a host is far above the measured ${m.bytesPerHost.toFixed(0)}`);
  });
}

test('the launch heap limit holds the default configuration; a max_hosts it cannot hold is refused, naming the key and both ways out', () => {
  // The limit V8 reports for a daemon started as the launchers start it.
  const r = spawnSync(process.execPath, [...LAUNCH_HEAP_FLAGS, '-p', "require('v8').getHeapStatistics().heap_size_limit"], { encoding: 'utf8' });
  const limit = Number(r.stdout.trim());
  assert.ok(limit >= LAUNCH_HEAP_LIMIT_MB * MB, r.stderr);
  // The young generation (three semi-spaces) as the launchers size it, on every Node: Node 24's own default made the limit 448 MB.
  assert.ok(limit <= (LAUNCH_HEAP_LIMIT_MB + 3 * LAUNCH_SEMI_SPACE_MB) * MB, `heap limit ${limit / MB} MB`);
  assert.equal(heapProblem({ max_hosts: 200_000, loyalty: 3 }, limit), null);
  assert.equal(heapProblem({ max_hosts: 200_000, loyalty: 10 }, limit), null);
  const msg = heapProblem({ max_hosts: 1_000_000, loyalty: 3 }, limit);
  assert.ok(msg);
  assert.match(msg, new RegExp(`^max_hosts=1000000 does not fit Node's heap: at loyalty=3 .* heap limit is ${Math.floor(limit / MB)} MB`));
  const fits = maxHostsFor(limit, 3);
  assert.match(msg, new RegExp(`Lower max_hosts to ${fits} or less, or raise the limit: NODE_OPTIONS=--max-old-space-size=(\\d+)$`));
  // Both ways out really are ways out.
  assert.equal(heapProblem({ max_hosts: fits, loyalty: 3 }, limit), null);
  assert.notEqual(heapProblem({ max_hosts: fits + 1, loyalty: 3 }, limit), null);
  const raised = Number(/max-old-space-size=(\d+)$/.exec(msg)![1]);
  assert.equal(heapProblem({ max_hosts: 1_000_000, loyalty: 3 }, raised * MB), null);
});

test('`ampere run` with a max_hosts the heap cannot hold stops at once, before the database or the firewall', { skip: skipUnlessRoot() }, () =>
  withNetns(async (ns) => {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-heap-'));
    try {
      const db = join(dir, 'data', 'ampere.db');
      const r = await ampere(['run'], { NODE_OPTIONS: LAUNCH_HEAP_FLAGS.join(' '), AMPERE_DB: db, AMPERE_MAX_HOSTS: '2000000' }, { netns: ns.name });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^ampere: max_hosts=2000000 does not fit Node's heap/);
      assert.equal(r.stdout, '');
      assert.equal(existsSync(join(dir, 'data')), false, 'no database made');
      assert.equal((await ns.must('ipset', ['list', '-n'])).trim(), '', 'no set made');
      assert.equal((await ns.must('iptables-nft-save', [])).includes('ampere'), false, 'no chain made');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }));
