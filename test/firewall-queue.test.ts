import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, type Logger } from '../src/log';
import { ConntrackFlusher, createBackend, FirewallQueue, type BanSource, type FirewallBackend, type KernelBan } from '../src/firewall';
import { CommandError, execStats, run } from '../src/firewall/exec';
import { addAttacker, skipUnlessRoot, UdpSink, withNetns } from '../tools/lab/netns';

const skip = skipUnlessRoot();

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

/** Records every call; can be told to fail. */
class FakeBackend implements FirewallBackend {
  readonly name = 'fake';
  readonly netns = undefined;
  readonly families = [4, 6] as const;
  readonly verifiable = false;
  readonly keepsBanTimes = true;
  calls: { op: string; addresses: string[] }[] = [];
  failNext = false;
  private async rec(op: string, bans: { address: string }[]): Promise<void> {
    this.calls.push({ op, addresses: bans.map((b) => b.address) });
    await new Promise((r) => setTimeout(r, 5)); // a kernel command takes a while
    if (this.failNext) {
      this.failNext = false;
      throw new CommandError('ipset restore -exist', 1, 'ipset v7.17: Error in line 1: Kernel error received: set type not supported');
    }
  }
  async init() {}
  async setAll(bans: Iterable<KernelBan>) { await this.rec('setAll', [...bans]); }
  async add(bans: KernelBan[]) { await this.rec('add', bans); }
  async remove(bans: { address: string }[]) { await this.rec('remove', bans); }
  keepsOrder(_count: number) { return false; }
  async list() { return []; }
  async inspect() { return { drifts: [], counts: [] }; }
  async listBans() { return []; }
  setTarget() {}
  setSetSize() {}
  async shutdown() {}
}

/** Applies calls in the order written, several in flight at once (like the ipset shell). */
class PipeBackend extends FakeBackend {
  inFlight = 0;
  maxInFlightAtSetAll = -1;
  limit = 100;
  keepsOrder(count: number) { return count <= this.limit; }
  private async track(op: string, bans: { address: string }[]): Promise<void> {
    this.calls.push({ op, addresses: bans.map((b) => b.address) });
    this.inFlight++;
    await new Promise((r) => setTimeout(r, 5));
    this.inFlight--;
  }
  async setAll(bans: Iterable<KernelBan>) { this.maxInFlightAtSetAll = this.inFlight; await this.track('setAll', [...bans]); }
  async add(bans: KernelBan[]) { await this.track('add', bans); }
  async remove(bans: { address: string }[]) { await this.track('remove', bans); }
}

const ban = (address: string, until: number | null = null): KernelBan => ({ address, family: address.includes(':') ? 6 : 4, until });

describe('FirewallQueue (fake backend)', () => {
  test('a lone ban goes out at once; calls made meanwhile become one batch', async () => {
    const fake = new FakeBackend();
    const q = new FirewallQueue(fake, captureLog().log, { conntrack: null });
    const first = q.add([ban('192.0.2.1')]);
    assert.deepEqual(fake.calls.map((c) => c.op), ['add'], 'sent synchronously, before add() returned');
    const rest = Array.from({ length: 100 }, (_, i) => q.add([ban(`198.51.100.${i + 1}`)]));
    await Promise.all([first, ...rest]);
    assert.deepEqual(fake.calls.map((c) => [c.op, c.addresses.length]), [['add', 1], ['add', 100]]);
  });

  test('a backend that keeps order (pipelines): every add and remove goes out at once, even while others are in flight; setAll waits for them and whatever comes after it waits for setAll', async () => {
    const fake = new PipeBackend();
    const q = new FirewallQueue(fake, captureLog().log, { conntrack: null });
    const burst = Array.from({ length: 12 }, (_, i) => q.add([ban(`192.0.2.${i + 1}`)]));
    const unban = q.remove([ban('192.0.2.1')]);
    assert.equal(fake.calls.length, 13, 'all thirteen written before any answer');
    assert.equal(fake.inFlight, 13);
    const all = q.setAll([ban('198.51.100.1')]);
    const after = [q.add([ban('198.51.100.2')]), q.add([ban('198.51.100.3')])];
    assert.equal(fake.calls.length, 13, 'setAll and what follows wait');
    let idle = false;
    const idleP = q.idle().then(() => { idle = true; });
    await Promise.all([...burst, unban]);
    await all;
    assert.equal(fake.maxInFlightAtSetAll, 0, 'setAll started only once the pipelined ones were done');
    await Promise.all(after);
    await idleP;
    assert.equal(idle, true);
    assert.deepEqual(fake.calls.slice(13).map((c) => [c.op, c.addresses]), [['setAll', ['198.51.100.1']], ['add', ['198.51.100.2', '198.51.100.3']]], 'batched behind setAll, as before');
    // Quiet again: the next add goes straight through.
    void q.add([ban('198.51.100.4')]);
    assert.equal(fake.calls.length, 16);
    await q.idle();
    // Too big a batch for the channel: one at a time, as before.
    fake.limit = 1;
    const big = q.add([ban('203.0.113.1'), ban('203.0.113.2')]);
    const small = q.add([ban('203.0.113.3')]);
    assert.equal(fake.calls.length, 17);
    await Promise.all([big, small]);
    assert.deepEqual(fake.calls.slice(16).map((c) => c.addresses), [['203.0.113.1', '203.0.113.2'], ['203.0.113.3']]);
  });

  test('the last call for an address wins within a batch; setAll keeps its place in the order', async () => {
    const fake = new FakeBackend();
    const q = new FirewallQueue(fake, captureLog().log, { conntrack: null });
    void q.add([ban('192.0.2.8')]); // goes out at once; what follows waits behind it
    void q.add([ban('192.0.2.1'), ban('192.0.2.2')]);
    void q.remove([{ address: '192.0.2.1', family: 4 }]);
    void q.add([ban('192.0.2.3')]);
    void q.setAll([ban('192.0.2.9')]);
    void q.remove([{ address: '192.0.2.9', family: 4 }]);
    await q.idle();
    assert.deepEqual(fake.calls, [
      { op: 'add', addresses: ['192.0.2.8'] },
      { op: 'remove', addresses: ['192.0.2.1'] },
      { op: 'add', addresses: ['192.0.2.2', '192.0.2.3'] },
      { op: 'setAll', addresses: ['192.0.2.9'] },
      { op: 'remove', addresses: ['192.0.2.9'] },
    ]);
  });

  test('a rendered full load goes to a backend that loads lines, in its place in the order; one that does not reads the bans', async () => {
    const format = { prefix: { 4: 'add t4 ', 6: 'add t6 ' }, rangePrefix: { 4: 'add m4 ', 6: 'add m6 ' }, infix: ' timeout ', maxSeconds: 9 } as const;
    class LinesBackend extends FakeBackend {
      async setAll(bans: BanSource) {
        const lines = bans.render?.(format);
        if (lines) this.calls.push({ op: 'setAll lines', addresses: [lines[4], lines[6], String(lines.count)] });
        else await super.setAll(bans);
      }
    }
    const fake = new LinesBackend();
    const q = new FirewallQueue(fake, captureLog().log, { conntrack: null });
    const applied: string[] = [];
    q.subscribe({ applied: (op, count) => applied.push(`${op} ${count}`) });
    const source = (): BanSource => ({ [Symbol.iterator]: () => [ban('192.0.2.1'), ban('bad address')][Symbol.iterator](), render: (f) => ({ 4: `${f.prefix[4]}192.0.2.1${f.infix}0`, 6: '', count: 1 }) });
    void q.add([ban('192.0.2.8')]);
    const loaded = q.setAll(source());
    void q.add([ban('192.0.2.2')]);
    await loaded;
    await q.idle();
    assert.deepEqual(fake.calls, [
      { op: 'add', addresses: ['192.0.2.8'] },
      { op: 'setAll lines', addresses: ['add t4 192.0.2.1 timeout 0', '', '1'] },
      { op: 'add', addresses: ['192.0.2.2'] },
    ]);
    assert.deepEqual(applied, ['add 1', 'setAll 1', 'add 1'], 'each applied batch is reported, with its size');
    assert.equal(q.healthy, true);
    const plain = new FakeBackend();
    await new FirewallQueue(plain, captureLog().log, { conntrack: null }).setAll(source());
    assert.deepEqual(plain.calls, [{ op: 'setAll', addresses: ['192.0.2.1'] }], 'read one by one, the bad address left out');
  });

  test('a failing command never throws out of the queue; it is logged and shown to the health check', async () => {
    const fake = new FakeBackend();
    const { log, lines } = captureLog();
    const q = new FirewallQueue(fake, log, { conntrack: null });
    const failed: string[] = [];
    q.subscribe({ failed: (op, err) => failed.push(`${op}: ${err.message}`) });
    fake.failNext = true;
    await q.add([ban('192.0.2.1')]); // resolves, does not reject
    assert.equal(q.healthy, false);
    assert.equal(failed.length, 1, 'the failure is reported to subscribers (metrics, the reconciler)');
    assert.match(failed[0], /^add: .*set type not supported/);
    assert.match(q.lastError ?? '', /set type not supported/);
    const err = lines.find((l) => l.level === 50);
    assert.equal(err?.cmd, 'ipset restore -exist');
    assert.match(JSON.stringify(err?.err), /set type not supported/);
    await q.add([ban('192.0.2.2')]);
    assert.equal(q.healthy, false, 'one later success does not mean the lost ban is back');
    await q.setAll([ban('192.0.2.1'), ban('192.0.2.2')]);
    assert.equal(q.healthy, true, 'a full resync does');
    assert.ok(q.lastSyncAt && q.lastSyncAt <= Date.now());
  });

  test('invalid addresses are dropped (and logged) without sinking the batch', async () => {
    const fake = new FakeBackend();
    const { log, lines } = captureLog();
    const q = new FirewallQueue(fake, log, { conntrack: null });
    await q.add([ban('192.0.2.1'), { address: '1.2.3.4; rm -rf /', family: 4, until: null }, { address: '::1 -j ACCEPT', family: 6, until: null }]);
    assert.deepEqual(fake.calls, [{ op: 'add', addresses: ['192.0.2.1'] }]);
    assert.equal(lines.filter((l) => l.msg === 'firewall: refused invalid address').length, 2);
  });

  test('dry-run backend keeps bans in memory and forgets ended ones', async () => {
    const fw = await createBackend('dry-run', { chain: 'ampere', target: 'DROP', iptables: 'auto' }, captureLog().log);
    const runs = execStats.runs;
    await fw.init();
    const now = Date.now();
    await fw.setAll([ban('192.0.2.1'), ban('192.0.2.2', now - 1)], now);
    await fw.add([ban('2001:db8::1', now + 100)], now);
    assert.deepEqual((await fw.list()).sort(), ['192.0.2.1', '2001:db8::1']);
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(await fw.list(), ['192.0.2.1']);
    await fw.remove([{ address: '192.0.2.1', family: 4 }]);
    assert.deepEqual(await fw.list(), []);
    assert.equal(execStats.runs, runs, 'no process');
  });
});

describe('FirewallQueue (kernel, in a namespace)', { skip }, () => {
  for (const kind of ['ipset', 'rules'] as const) {
    test(`${kind}: 200 simultaneous bans take a few processes and all land`, () =>
      withNetns(async (ns) => {
        const fw = await createBackend(kind, { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
        await fw.init();
        const q = new FirewallQueue(fw, captureLog().log, { conntrack: null });
        const want: string[] = [];
        for (let i = 0; i < 150; i++) want.push(`10.9.${i >> 8}.${i & 255}`);
        for (let i = 0; i < 50; i++) want.push(`2001:db8::${(i + 1).toString(16)}`);
        const runs = execStats.runs;
        await Promise.all(want.map((a) => q.add([ban(a)])));
        const used = execStats.runs - runs;
        assert.ok(used <= 4, `${used} processes for 200 bans`);
        assert.deepEqual((await fw.list()).sort(), want.sort());
        assert.equal(q.healthy, true);
      }));
  }

  test('ipset: a burst of bans and unbans written through the shell at once lands in the order written', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      await fw.setAll([], Date.now());
      const q = new FirewallQueue(fw, captureLog().log, { conntrack: null });
      const runs = execStats.runs;
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) calls.push(q.add([ban(`10.8.0.${i + 1}`)]));
      // The same address banned, unbanned and banned again, and one banned then unbanned.
      calls.push(q.add([ban('10.8.1.1')]), q.remove([ban('10.8.1.1')]), q.add([ban('10.8.1.1')]));
      calls.push(q.add([ban('2001:db8::7')]), q.remove([ban('2001:db8::7')]));
      await Promise.all(calls);
      assert.equal(execStats.runs - runs, 0, 'no process: all through the live shell');
      const want = [...Array.from({ length: 40 }, (_, i) => `10.8.0.${i + 1}`), '10.8.1.1'];
      assert.deepEqual((await fw.list()).sort(), want.sort());
      assert.equal(q.healthy, true);
      await fw.shutdown();
    }));

  test('conntrack entries of a new ban are deleted after it is applied', () =>
    withNetns(async (host) => {
      const att = await addAttacker(host);
      let q: FirewallQueue | undefined;
      let conntrack: ConntrackFlusher | undefined;
      try {
        // Any conntrack-using rule makes this namespace track flows, as on a real PBX.
        await host.must('iptables-nft', ['-w', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED', '-j', 'ACCEPT']);
        await host.must('ip6tables-nft', ['-w', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED', '-j', 'ACCEPT']);
        const sink = await UdpSink.start(host);
        // [0] of each family is banned below, [1] is not.
        for (const [a, to] of [[att.v4[0], att.hostV4], [att.v6[0], att.hostV6], [att.v4[1], att.hostV4], [att.v6[1], att.hostV6]]) {
          assert.ok(await sink.passes(att.ns, a, to));
        }
        const flows = async (a: string) => (await host.exec('conntrack', ['-L', '-f', a.includes(':') ? 'ipv6' : 'ipv4', '-s', a])).stdout.trim().split('\n').filter(Boolean).length;
        assert.equal(await flows(att.v4[0]), 1);
        assert.equal(await flows(att.v6[0]), 1);
        const { log } = captureLog();
        const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: host.name }, log);
        await fw.init();
        conntrack = new ConntrackFlusher(log, host.name);
        q = new FirewallQueue(fw, log, { conntrack });
        await q.add([ban(att.v4[0]), ban(att.v6[0])]);
        // The flush starts just after the callers hear "applied" (off the ban's path).
        await new Promise((r) => setImmediate(r));
        await conntrack.idle();
        assert.equal(conntrack.done, 2);
        assert.equal(conntrack.starts, 1, 'one helper process, no process per ban');
        assert.equal(await flows(att.v4[0]), 0);
        assert.equal(await flows(att.v6[0]), 0);
        // The source not banned keeps its flow.
        assert.equal(await flows(att.v4[1]), 1);
        assert.equal(await flows(att.v6[1]), 1);
      } finally {
        conntrack?.close();
        await att.ns.destroy();
      }
    }));
});

describe('run(): input streamed from an iterable', () => {
  test('every chunk reaches the command, in order, with back-pressure', async () => {
    function* chunks() { for (let i = 0; i < 200; i++) yield `${'x'.repeat(1000)} ${i}\n`; } // 200 kB: several pipe fills
    const r = await run('cut', ['-d', ' ', '-f', '2'], { input: chunks() });
    assert.deepEqual(r.stdout.trim().split('\n').map(Number), Array.from({ length: 200 }, (_, i) => i));
  });

  test('an input that fails half-way fails the command: a cut restore never passes for a whole one', async () => {
    function* chunks() { yield 'create ampere-t4 hash:ip\n'; throw new Error('refusing non-canonical address "1.2.3.4; x"'); }
    await assert.rejects(run('cat', [], { input: chunks() }), (e: unknown) => e instanceof CommandError && /input not written: .*non-canonical/.test(e.message));
  });
});
