import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { LAUNCH_HEAP_FLAGS } from '../src/cli/launch';
import { Store } from '../src/store';
import { DaemonProcess, quietEnv } from '../tools/lab/daemon';
import { removeTempDir, skipUnlessRoot, tempDir, withNetns } from '../tools/lab/netns';

/**
 * A daemon restarted (not the machine) while the kernel's set holds 1,000,000 bans: the start
 * lists the kernel to adopt what the database lacks. That listing once overflowed the stack
 * past ~120k members (error logged, nothing adopted) and, once fixed, did not fit the
 * launcher's 256 MB heap (the daemon died, SIGABRT). Real ipset in a namespace, the heap limit
 * `ampere run` gives.
 */
const skip = skipUnlessRoot();
const N = 1_000_000;

function fillActive(path: string, n: number, now: number): void {
  new Store(path).close(); // the schema
  const c = new Database(path);
  c.exec('BEGIN');
  const addr = `'10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255)`;
  c.prepare(`WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
    INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until) SELECT ${addr}, 4, ?, ?, 3, 1, 1, ? FROM k`).run(n, now, now, now + 86_400_000);
  c.prepare(`WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
    INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source)
    SELECT ${addr}, 4, ?, ?, 'ChallengeResponseFailed', 'PJSIP', '100', 3, 'auto' FROM k`).run(n, now, now + 86_400_000);
  c.exec('COMMIT');
  c.close();
}

test('a restart on a kernel holding 1,000,000 bans: listed and checked within the heap, nothing adopted twice, no error', { skip }, () =>
  withNetns(async (ns) => {
    const dir = tempDir('restart-1m');
    try {
      const db = join(dir, 'ampere.db');
      const env = { ...(await quietEnv(db)), AMPERE_BACKEND: 'ipset', AMPERE_SET_SIZE: String(2 * N), NODE_OPTIONS: LAUNCH_HEAP_FLAGS.join(' ') };
      fillActive(db, N, Date.now());
      const first = new DaemonProcess(env, { netns: ns.name });
      try {
        assert.equal((await first.waitFor((l) => l.msg === 'ampere started', 120_000)).bansRestored, N);
      } finally { assert.equal(await first.stop(), 0); }
      // The kernel keeps the set; one more member the database lacks (a SIGKILL before its commit).
      await ns.must('ipset', ['add', 'ampere-v4', '192.0.2.77', 'timeout', '600']);
      const again = new DaemonProcess(env, { netns: ns.name });
      try {
        const started = await again.waitFor((l) => l.msg === 'ampere started', 120_000);
        assert.equal(started.bansRestored, N + 1);
        const adopted = again.lines.filter((l) => String(l.msg).startsWith('adopted '));
        assert.deepEqual(adopted.map((l) => [l.msg, l.inKernel]), [['adopted 1 bans from the kernel', N + 1]]);
        assert.deepEqual(again.lines.filter((l) => l.level >= 50).map((l) => l.msg), [], 'no error logged');
        assert.equal(again.proc.exitCode, null, 'still running');
      } finally { assert.equal(await again.stop(), 0); }
    } finally {
      removeTempDir(dir);
    }
  }));
