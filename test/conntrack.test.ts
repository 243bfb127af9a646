import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../src/log';
import { ConntrackFlusher } from '../src/firewall';
import { execStats, which } from '../src/firewall/exec';
import { HELPER_NICENESS } from '../src/firewall/conntrack';
import type { Family } from '../src/net/ip';
import { skipUnlessRoot, withNetns, type Netns } from '../tools/lab/netns';
import { childrenOf, niceness } from '../tools/lab/proc';

// Every conntrack call here, the helper's included, runs in a namespace made by the test.
const skip = skipUnlessRoot() ?? (which('conntrack') ? undefined : 'conntrack not installed');

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}
const warnings = (lines: Record<string, unknown>[]) => lines.filter((l) => (l.level as number) >= 40);

const ban = (address: string) => ({ address, family: (address.includes(':') ? 6 : 4) as Family });

/** One UDP conntrack entry per source (towards a fixed local address), made with one `conntrack -R`. */
async function addFlows(ns: Netns, sources: string[]): Promise<void> {
  const lines = sources.map((s, i) => `-I -p udp -s ${s} -d ${s.includes(':') ? 'fd31:ff::1' : '10.232.0.1'} --sport ${20000 + i} --dport 5060 -t 600\n`);
  // Through a pipe: `conntrack -R -` opens /dev/stdin, which fails on the socket Node gives a child.
  await ns.must('sh', ['-c', 'cat | conntrack -R -'], lines.join(''));
}

/** Entries per original source address, both families. */
async function flowsBySource(ns: Netns): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const f of ['ipv4', 'ipv6']) {
    for (const line of (await ns.exec('conntrack', ['-L', '-f', f])).stdout.split('\n')) {
      const m = /\bsrc=(\S+)/.exec(line);
      if (m) out.set(m[1], (out.get(m[1]) ?? 0) + 1);
    }
  }
  return out;
}

/** The conntrack helpers this process started (their argv holds the name ampere-conntrack). */
function helperChildren(): number[] {
  return childrenOf(process.pid).filter((c) => c.cmd.split(' ').includes('ampere-conntrack')).map((c) => c.pid);
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An executable stand-in for conntrack: `body` is a sh script; removed by the caller. */
function fakeConntrack(body: string): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-ct-'));
  const path = join(dir, 'conntrack');
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return { path, dir };
}

describe('ConntrackFlusher (kernel, in a namespace)', { skip }, () => {
  test('a burst of 50 bans: their flows are gone, others untouched, one helper, no process per ban', () =>
    withNetns(async (ns) => {
      const banned = Array.from({ length: 50 }, (_, i) => `10.232.${1 + (i >> 4)}.${1 + (i & 15)}`);
      const kept = Array.from({ length: 10 }, (_, i) => `10.232.9.${1 + i}`);
      await addFlows(ns, [...banned, ...kept]);
      const before = await flowsBySource(ns);
      for (const a of [...banned, ...kept]) assert.equal(before.get(a), 1, a);
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name);
      try {
        const runs = execStats.runs;
        // As the queue calls it: one flush per kernel batch, each in its own turn of the loop.
        for (const a of banned) {
          c.flush([ban(a)]);
          await new Promise((r) => setImmediate(r));
        }
        // Started as ip netns exec → nice → sh, each an exec: while one runs, the command line
        // reads empty, so wait for the last one (the shell) before counting.
        await until('the helper to be its shell', () => childrenOf(process.pid).some((k) => k.pid === c.pid && k.cmd.startsWith('sh ')));
        assert.deepEqual(helperChildren(), [c.pid], 'exactly one helper runs');
        assert.equal(niceness(c.pid!), Math.min(19, niceness(process.pid) + HELPER_NICENESS), 'the helper runs niced');
        await c.idle();
        assert.equal(c.done, 50);
        assert.equal(c.failed, 0);
        assert.equal(c.starts, 1);
        assert.ok(c.batches < 50, `${c.batches} lines for 50 bans arriving while busy`);
        assert.equal(execStats.runs, runs, 'no process started through run()');
        const after = await flowsBySource(ns);
        for (const a of banned) assert.equal(after.get(a), undefined, `flow of banned ${a} deleted`);
        for (const a of kept) assert.equal(after.get(a), 1, `flow of ${a} kept`);
        assert.deepEqual(warnings(lines), []);
        // More bans later: still the same helper.
        await addFlows(ns, [kept[0]]);
        c.flush([ban(kept[0])]);
        await c.idle();
        assert.equal((await flowsBySource(ns)).get(kept[0]), undefined);
        assert.equal(c.starts, 1);
        assert.deepEqual(helperChildren(), [c.pid]);
      } finally {
        c.close();
      }
      assert.equal(c.pid, null);
    }));

  test('IPv6: the banned source loses its flows, another v6 source and a v4 one keep theirs', () =>
    withNetns(async (ns) => {
      const [bad, good, v4] = ['2001:db8:5::7', '2001:db8:5::8', '10.232.0.7'];
      await addFlows(ns, [bad, bad, good, v4]);
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name);
      try {
        c.flush([ban(bad)]);
        await c.idle();
        const after = await flowsBySource(ns);
        assert.equal(after.get(bad), undefined);
        assert.equal(after.get(good), 1);
        assert.equal(after.get(v4), 1);
        assert.equal(c.done, 1);
        assert.deepEqual(warnings(lines), []);
      } finally {
        c.close();
      }
    }));

  test('the first ban after a quiet spell goes at once; bans within the interval after it wait and go together', () =>
    withNetns(async (ns) => {
      const [a, b, d] = ['10.232.3.1', '10.232.3.2', '10.232.3.3'];
      await addFlows(ns, [a, b, d]);
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name, { minIntervalMs: 1000 });
      try {
        c.flush([ban(a)]);
        const sent = performance.now();
        assert.equal(c.batches, 1, 'sent at once');
        await until('the first line answered', () => c.done === 1);
        assert.equal((await flowsBySource(ns)).get(a), undefined);
        assert.ok(performance.now() - sent < 1000, 'answered within the interval (else the rest of this test proves nothing)');
        c.flush([ban(b)]);
        c.flush([ban(d)]);
        assert.equal(c.batches, 1, 'the helper is free, but the interval has not passed');
        await c.idle();
        assert.ok(performance.now() - sent >= 990, `second line ${Math.round(performance.now() - sent)} ms after the first`);
        assert.equal(c.batches, 2, 'both waiting bans in one line');
        assert.equal(c.done, 3);
        const after = await flowsBySource(ns);
        assert.equal(after.get(b), undefined);
        assert.equal(after.get(d), undefined);
        assert.deepEqual(warnings(lines), []);
      } finally {
        c.close();
      }
    }));

  test('an address without flows counts as done and logs no warning', () =>
    withNetns(async (ns) => {
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name);
      try {
        c.flush([ban('192.0.2.44'), ban('2001:db8::44')]);
        await c.idle();
        assert.equal(c.done, 2);
        assert.equal(c.failed, 0);
        assert.deepEqual(warnings(lines), []);
      } finally {
        c.close();
      }
    }));

  test('a helper killed while idle is noticed; the next ban starts a new one and is cut', () =>
    withNetns(async (ns) => {
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name);
      try {
        c.flush([ban('192.0.2.1')]);
        await c.idle();
        const first = c.pid!;
        assert.ok(first > 0);
        process.kill(first, 'SIGKILL');
        await until('the death to be noticed', () => c.pid === null);
        assert.ok(warnings(lines).some((l) => String(l.msg).includes('conntrack helper exited') && String(l.how).includes('SIGKILL')));
        await addFlows(ns, ['10.232.0.9']);
        c.flush([ban('10.232.0.9')]);
        await c.idle();
        assert.equal((await flowsBySource(ns)).get('10.232.0.9'), undefined);
        assert.equal(c.starts, 2);
        assert.notEqual(c.pid, first);
        assert.equal(c.done, 2);
      } finally {
        c.close();
      }
    }));

  test('a helper killed during a batch: the batch is tried again by a new helper', () =>
    withNetns(async (ns) => {
      // conntrack, but slow: the kill lands while the batch is in flight.
      const real = which('conntrack')!;
      const fake = fakeConntrack(`sleep 0.3\nexec ${real} "$@"`);
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name, { binary: fake.path, restartDelayMs: 50 });
      try {
        await addFlows(ns, ['10.232.0.11', '2001:db8:6::11']);
        c.flush([ban('10.232.0.11'), ban('2001:db8:6::11')]);
        const first = c.pid!;
        await new Promise((r) => setTimeout(r, 100));
        process.kill(first, 'SIGKILL');
        await c.idle();
        assert.ok(warnings(lines).some((l) => String(l.msg).includes('tried again')));
        assert.equal(c.starts, 2);
        assert.equal(c.done, 2);
        assert.equal(c.failed, 0);
        const after = await flowsBySource(ns);
        assert.equal(after.get('10.232.0.11'), undefined);
        assert.equal(after.get('2001:db8:6::11'), undefined);
      } finally {
        c.close();
        rmSync(fake.dir, { recursive: true, force: true });
      }
    }));

  test('a failing conntrack is logged with its message, counted, and the next batch still goes out', () =>
    withNetns(async (ns) => {
      const fake = fakeConntrack(`cat >/dev/null\necho "conntrack v1.4.7 (conntrack-tools): Operation failed: sorry, you must be root" >&2\nexit 1`);
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name, { binary: fake.path });
      try {
        c.flush([ban('192.0.2.5'), ban('192.0.2.6')]);
        await c.idle();
        assert.equal(c.done, 0);
        assert.equal(c.failed, 2);
        const w = warnings(lines);
        assert.equal(w.length, 1);
        assert.equal(w[0].msg, 'conntrack delete failed');
        assert.match(String(w[0].err), /Operation failed: sorry, you must be root/);
        assert.equal(w[0].code, 1);
        c.flush([ban('192.0.2.7')]);
        await c.idle();
        assert.equal(c.failed, 3);
        assert.equal(c.starts, 1, 'a failed batch does not cost the helper');
      } finally {
        c.close();
        rmSync(fake.dir, { recursive: true, force: true });
      }
    }));

  test('a helper that hangs is killed at the timeout, tried once more, then the batch is given up', () =>
    withNetns(async (ns) => {
      const fake = fakeConntrack('exec sleep 30');
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, ns.name, { binary: fake.path, timeoutMs: 200, restartDelayMs: 50 });
      try {
        c.flush([ban('192.0.2.8')]);
        await c.idle();
        assert.equal(c.done, 0);
        assert.equal(c.failed, 1);
        assert.equal(c.starts, 2);
        const msgs = warnings(lines).map((l) => String(l.msg));
        assert.equal(msgs.filter((m) => m.includes('did not answer in time')).length, 2);
        assert.ok(msgs.some((m) => m.includes('its entries are not deleted')));
        // Nothing pending: no helper is started again behind our back.
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(c.starts, 2);
      } finally {
        c.close();
        rmSync(fake.dir, { recursive: true, force: true });
      }
    }));

  test('a helper that cannot start (namespace gone) is retried after a delay, not in a loop', async () => {
    const { log, lines } = captureLog();
    const c = new ConntrackFlusher(log, `ampt-${process.pid}-never-created`, { restartDelayMs: 100 });
    try {
      const t0 = Date.now();
      c.flush([ban('192.0.2.9')]);
      await c.idle();
      assert.ok(Date.now() - t0 >= 90, 'second start waited');
      assert.equal(c.starts, 2);
      assert.equal(c.failed, 1);
      assert.ok(warnings(lines).some((l) => /network namespace/i.test(String(l.stderr))), JSON.stringify(warnings(lines)));
    } finally {
      c.close();
    }
  });

  test('an address that is not canonical is refused before anything starts', async () => {
    const { log, lines } = captureLog();
    const c = new ConntrackFlusher(log, 'ampt-never-created');
    c.flush([{ address: '192.0.2.1 -F', family: 4 }, { address: '*', family: 4 }, { address: '2001:DB8::1', family: 6 }]);
    await c.idle();
    assert.equal(c.starts, 0);
    assert.equal(warnings(lines).filter((l) => l.msg === 'conntrack: refused invalid address').length, 3);
  });
});
