import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainHolder, lockChain, lockDatabase, LockError, takeDaemonLocks } from '../src/lock';
import { closedPort, DaemonProcess, quietEnv } from '../tools/lab/daemon';
import { skipUnlessRoot, withNetns } from '../tools/lab/netns';

const started = (l: { msg: string }) => l.msg === 'ampere started';

test('the database lock: a second holder is refused at once, the lock goes with its connection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-lock-'));
  try {
    const db = join(dir, 'd', 'ampere.db');
    const first = lockDatabase(db)!;
    assert.throws(() => lockDatabase(db), (e: unknown) => e instanceof LockError && /another Ampere daemon is running on this database .*ampere\.db\.lock is held/.test(e.message));
    first.close();
    lockDatabase(db)!.close();
    assert.equal(lockDatabase(':memory:'), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the chain lock answers with its holder; a second one is refused naming it; released, it is free', async () => {
  const chain = `t${process.pid}x${Date.now() % 100000}`;
  const srv = await lockChain(chain, { pid: process.pid, db: '/data/one.db' });
  const h = await chainHolder(chain);
  assert.deepEqual(h, { pid: process.pid, claimedPid: process.pid, db: '/data/one.db' });
  await assert.rejects(lockChain(chain, { pid: 1, db: '/data/two.db' }),
    (e: unknown) => e instanceof LockError && e.message.includes(`chain ${chain} is held by another Ampere daemon in this network namespace: pid ${process.pid}, database /data/one.db`));
  await new Promise<void>((r) => srv.close(() => r()));
  const locks = await takeDaemonLocks(':memory:', chain);
  await locks.release();
});

test('5 simultaneous starts on one database: exactly one runs, the others exit 1 naming the reason; a SIGKILLed holder blocks nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-lock5-'));
  const env = await quietEnv(join(dir, 'ampere.db'));
  const all = Array.from({ length: 5 }, () => new DaemonProcess(env));
  try {
    // Each either starts or exits; wait for all five to do one or the other.
    const outcome = await Promise.all(all.map((d) => Promise.race([d.waitFor(started, 60_000).then(() => 'running'), d.exit.then((c) => `exit ${c}`)])));
    assert.equal(outcome.filter((o) => o === 'running').length, 1, outcome.join(', '));
    assert.equal(outcome.filter((o) => o === 'exit 1').length, 4, outcome.join(', '));
    for (const d of all.filter((_, i) => outcome[i] !== 'running')) {
      const fatal = d.lines.find((l) => l.msg === 'ampere could not start');
      assert.match(String(fatal?.err), /another Ampere daemon is running on this database/);
      assert.equal(d.count((l) => l.msg === 'bans restored'), 0, 'the refused start touched nothing');
    }
    const winner = all[outcome.indexOf('running')];
    assert.equal(winner.proc.exitCode, null, 'the one that runs stays up');
    // A SIGKILLed holder: the kernel drops its lock, the next start runs.
    await winner.stop('SIGKILL');
    const next = new DaemonProcess(env);
    all.push(next);
    await next.waitFor(started, 30_000);
    assert.equal(await next.stop(), 0);
  } finally {
    await Promise.all(all.map((d) => d.stop('SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('two databases, one chain in one namespace: the second refuses naming the first (pid, database), the first keeps its sets', { skip: skipUnlessRoot() }, () =>
  withNetns(async (ns) => {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-lockchain-'));
    const port = String(await closedPort());
    const env = (db: string) => ({ AMPERE_PORT: port, AMPERE_DB: join(dir, db, 'ampere.db'), AMPERE_BACKEND: 'ipset', AMPERE_CHAIN: 'amplock', AMPERE_AMI_TIMEOUT: '1s' });
    const daemons: DaemonProcess[] = [];
    try {
      const first = new DaemonProcess(env('one'), { netns: ns.name });
      daemons.push(first);
      await first.waitFor(started, 30_000);
      const sets = await ns.must('ipset', ['list', '-n']);
      const second = new DaemonProcess(env('two'), { netns: ns.name });
      daemons.push(second);
      assert.equal(await second.exit, 1);
      const fatal = second.lines.find((l) => l.msg === 'ampere could not start');
      assert.match(String(fatal?.err), new RegExp(`chain amplock is held by another Ampere daemon in this network namespace: pid ${first.proc.pid}, database ${join(dir, 'one', 'ampere.db')}`));
      assert.equal(await ns.must('ipset', ['list', '-n']), sets, 'the first daemon\'s sets are untouched');
      assert.equal(first.proc.exitCode, null);
      // SIGKILLed, its chain lock is gone with it: the other database's daemon now starts.
      await first.stop('SIGKILL');
      const third = new DaemonProcess(env('two'), { netns: ns.name });
      daemons.push(third);
      await third.waitFor(started, 30_000);
      assert.equal(await third.stop(), 0);
    } finally {
      await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
      rmSync(dir, { recursive: true, force: true });
    }
  }));

test('a control socket that cannot be opened stops the start (exit 1, naming the socket), and releases the lock', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-locksock-'));
  // A directory so deep that the socket's path cannot fit a Unix socket address.
  const deep = join(dir, 'x'.repeat(60), 'y'.repeat(60));
  const env = await quietEnv(join(deep, 'ampere.db'));
  const d = new DaemonProcess(env);
  try {
    assert.equal(await d.exit, 1);
    const fatal = d.lines.find((l) => l.msg === 'ampere could not start');
    assert.match(String(fatal?.err), /control socket .*ampere\.sock not opened: .* longer than 107 bytes/);
    assert.equal(d.count(started), 0);
    lockDatabase(env.AMPERE_DB)!.close();
  } finally {
    await d.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
