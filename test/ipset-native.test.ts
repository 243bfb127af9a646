import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createLogger, type Logger } from '../src/log';
import { createBackend, renderedBans, type KernelBan } from '../src/firewall';
import { execStats, type CommandError } from '../src/firewall/exec';
import { nativeIpsetLoader } from '../src/firewall/ipset-native';
import { LoaderServer } from '../src/firewall/ipset-serve';
import { removeTempDir, skipUnlessRoot, tempDir, withNetns, type Netns } from '../tools/lab/netns';

/**
 * The native ipset loader (native/ipset-load.c), built here from the source under test: what it
 * puts in real sets inside a namespace, the same as `ipset restore` of the same lines; every
 * line it must refuse (hostile input among them) refused with its line number; and the ipset
 * backend's full loads and big batches alike through it and through `ipset restore`.
 */
const skip = skipUnlessRoot() ?? (hasCompiler() ? undefined : 'no C compiler (gcc) to build the native loader');

function hasCompiler(): boolean {
  try { execFileSync('cc', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

/** The members of a set as "address[ timeout]" with timeouts rounded down to tens (a load takes a moment). */
async function members(ns: Netns, set: string): Promise<string[]> {
  const out = await ns.must('ipset', ['save', set]);
  return out.split('\n').filter((l) => l.startsWith('add ')).map((l) => {
    const [, , address, , timeout] = l.split(' ');
    return timeout === undefined || timeout === '0' ? `${address} 0` : `${address} ~${Math.floor(Number(timeout) / 100)}`;
  }).sort();
}

/** A set's members and their remaining timeouts in seconds (0: none). */
async function timeouts(ns: Netns, set: string): Promise<Map<string, number>> {
  const out = await ns.must('ipset', ['save', set]);
  return new Map(out.split('\n').filter((l) => l.startsWith('add ')).map((l) => {
    const [, , address, , timeout] = l.split(' ');
    return [address, Number(timeout ?? 0)] as const;
  }));
}

describe('native ipset loader', { skip }, () => {
  let dir: string;
  let loader: string;
  before(() => {
    dir = tempDir('ipset-native');
    loader = join(dir, 'ampere-ipset-load');
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', loader, 'native/ipset-load.c']);
  });
  after(() => removeTempDir(dir));

  const load = (ns: Netns, input: string) => ns.exec(loader, [], input);
  const sets = async (ns: Netns) => {
    await ns.must('ipset', ['restore'], [
      'create h4 hash:ip family inet timeout 0 maxelem 5', 'create r4 hash:net family inet timeout 0',
      'create h6 hash:ip family inet6 timeout 0', 'create plain hash:ip family inet', ''].join('\n'));
  };

  test('adds and deletes hosts and ranges of both families, with and without timeouts; repeats are no error', () =>
    withNetns(async (ns) => {
      await sets(ns);
      const r = await load(ns, ['add h4 192.0.2.1 timeout 600', 'add h4 192.0.2.2', '', 'add r4 10.0.0.0/24 timeout 900', 'add h6 2001:db8::1 timeout 700',
        'add h4 192.0.2.1 timeout 1200', 'add h4 192.0.2.3', 'del h4 192.0.2.3', 'del h4 192.0.2.99', 'add h6 2001:db8::2'].join('\n'));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await members(ns, 'h4'), ['192.0.2.1 ~11', '192.0.2.2 0']);
      assert.deepEqual(await members(ns, 'r4'), ['10.0.0.0/24 ~8']);
      assert.deepEqual(await members(ns, 'h6'), ['2001:db8::1 ~6', '2001:db8::2 0']);
    }));

  test('every line it must refuse names its line; hostile input never reaches the kernel as something else', () =>
    withNetns(async (ns) => {
      await sets(ns);
      const cases: [string, number, RegExp][] = [
        ['add h4 192.0.2.1\nadd h4 192.0.2.x', 2, /not an IP address/],
        ['add h4 192.0.2.1;flush', 1, /not an IP address/],
        ['flush h4', 1, /only add and del/],
        ['create x hash:ip', 1, /only add and del/],
        ['add h4 192.0.2.1 timeout 99999999999', 1, /timeout/],
        ['add h4 192.0.2.1 timeout -1', 1, /timeout/],
        ['add h4 192.0.2.1 comment x', 1, /only the timeout option/],
        ['add h4 192.0.2.1 timeout 1 extra words here', 1, /too many words|expected/],
        ['add h4\0evil 192.0.2.1', 1, /NUL byte/],
        [`add h4 ${'1'.repeat(300)}`, 1, /line too long/],
        ['add h4;rm 192.0.2.1', 1, /not a set name/],
        [`add ${'s'.repeat(40)} 192.0.2.1`, 1, /not a set name/],
        ['add h4 192.0.2.1/33', 1, /prefix longer/],
        ['add h4 192.0.2.1/x', 1, /not a prefix/],
        ['add nosuch 192.0.2.1', 1, /does not exist/],
        ['add plain 192.0.2.1 timeout 5', 1, /without timeout support/],
        ['add h4 2001:db8::1', 1, /protocol error/],
        ['add h4 192.0.2.1\nadd h4 0.0.0.0', 2, /Null-valued element/],
      ];
      for (const [input, line, why] of cases) {
        const r = await load(ns, input);
        assert.equal(r.code, 1, input);
        assert.match(r.stderr, new RegExp(`Error in line ${line}: `), `${JSON.stringify(input.slice(0, 60))}: ${r.stderr}`);
        assert.match(r.stderr, why, r.stderr);
      }
      assert.deepEqual(await members(ns, 'plain'), []);
      assert.ok((await members(ns, 'h4')).every((m) => m.startsWith('192.0.2.1 ')), 'nothing but the valid address went in');
    }));

  test('a full set: refused at the line that does not fit, the ones before it kept', () =>
    withNetns(async (ns) => {
      await sets(ns);
      const r = await load(ns, Array.from({ length: 8 }, (_, i) => `add h4 198.51.100.${i + 1}`).join('\n'));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Error in line 6: Hash is full/);
      assert.equal((await members(ns, 'h4')).length, 5);
    }));

  test('--serve: batch after batch, each answered alone; a failed batch drops its rest; nothing uncommitted is applied', () =>
    withNetns(async (ns) => {
      await sets(ns);
      const r = await ns.exec(loader, ['--serve'], [
        'add h4 192.0.2.1', 'commit',
        'add h4 192.0.2.2', 'add h4 192.0.2.x', 'add h4 192.0.2.3', 'commit',
        'commit',
        'commit x', 'commit',
        'add h4 192.0.2.4\0commit', 'commit',
        ' commit', 'commit',
        'add h4 192.0.2.5', 'commit',
        'add nosuch 192.0.2.9', 'commit',
        'add h4 192.0.2.6',
      ].join('\n') + '\n');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trimEnd().split('\n'), [
        'ok',
        'Error in line 2: not an IP address',
        'ok',
        'Error in line 1: only add and del lines are taken',
        'Error in line 1: a NUL byte in the line',
        'Error in line 1: only add and del lines are taken',
        'ok',
        'Error in line 1: The set with the given name does not exist',
      ]);
      assert.deepEqual(await members(ns, 'h4'), ['192.0.2.1 0', '192.0.2.5 0']);
    }));

  test('LoaderServer: one process for many batches; a refused line fails its batch alone; a loader killed mid-batch fails that batch and is replaced', () =>
    withNetns(async (ns) => {
      await sets(ns);
      const server = new LoaderServer(loader, ns.name);
      const runs = execStats.runs;
      const batch = (from: number, n: number) => Array.from({ length: n }, (_, i) => `add h6 2001:db8::${(from + i).toString(16)}`).join('\n');
      await server.run(batch(1, 3000));
      await server.run([Buffer.from(batch(3001, 3000)), '\n', batch(6001, 10)]);
      await assert.rejects(server.run('add h6 2001:db8::ffff\nadd h6 2001:db8::zz\n'), (e: CommandError) => e.name === 'CommandError' && /Error in line 2: not an IP address/.test(e.stderr));
      await server.run('add r4 10.1.0.0/16');
      assert.equal(execStats.runs - runs, 1, 'one loader for every batch');
      const killer = function* () {
        yield batch(7000, 100) + '\n';
        execFileSync('pkill', ['-KILL', '-f', `${loader} --serve`]);
        for (let i = 0; i < 200; i++) yield batch(8000 + i * 100, 100) + '\n';
      };
      await assert.rejects(server.run(killer()), (e: CommandError) => e.name === 'CommandError');
      const broken = function* () { yield 'add h6 2001:db8:1::1\n'; throw new Error('render failed'); };
      await assert.rejects(server.run(broken()), (e: CommandError) => e.code === 'input' && /render failed/.test(e.stderr));
      await server.run('add h4 192.0.2.7');
      assert.equal(execStats.runs - runs, 3, 'a new loader after each one that went');
      assert.deepEqual(await members(ns, 'h4'), ['192.0.2.7 0']);
      assert.deepEqual(await members(ns, 'r4'), ['10.1.0.0/16 0']);
      const h6 = new Set((await members(ns, 'h6')).map((m) => m.split(' ')[0]));
      assert.ok(h6.has('2001:db8::1') && h6.has('2001:db8::1770') && h6.has('2001:db8::177a'), 'the batches before are in');
      assert.ok(!h6.has('2001:db8::ffff') && !h6.has('2001:db8:1::1'), 'nothing of a failed batch is in');
      server.close();
    }));

  test('the same lines give the same sets as ipset restore', () =>
    withNetns(async (ns) => {
      const lines: string[] = [];
      for (let i = 0; i < 20_000; i++) {
        const t = i % 3 === 0 ? '' : ` timeout ${1000 + (i % 5000)}`;
        if (i % 4 === 0) lines.push(`add SET6 2001:db8:${(i >> 8).toString(16)}::${(i & 255).toString(16)}${t}`);
        else if (i % 97 === 0) lines.push(`add NET4 10.${(i >> 8) & 255}.${i & 255}.0/24${t}`);
        else lines.push(`add SET4 198.18.${(i >> 8) & 255}.${i & 255}${t}`);
      }
      for (const k of ['a', 'b']) {
        await ns.must('ipset', ['restore'], [`create ${k}4 hash:ip family inet timeout 0 maxelem 100000`, `create ${k}6 hash:ip family inet6 timeout 0`, `create ${k}n4 hash:net family inet timeout 0`, ''].join('\n'));
      }
      const named = (k: string) => lines.map((l) => l.replace('SET4', `${k}4`).replace('SET6', `${k}6`).replace('NET4', `${k}n4`)).join('\n') + '\n';
      await ns.must('ipset', ['restore', '-exist'], named('a'));
      const r = await load(ns, named('b'));
      assert.equal(r.code, 0, r.stderr);
      for (const [a, b] of [['a4', 'b4'], ['a6', 'b6'], ['an4', 'bn4']]) {
        const [x, y] = [await timeouts(ns, a), await timeouts(ns, b)];
        assert.ok(x.size > 0);
        assert.deepEqual([...y.keys()].sort(), [...x.keys()].sort(), `${b} holds other members than ${a}`);
        // Each timeout counts down from its own load: the two loads are seconds apart at most.
        for (const [address, t] of x) {
          const u = y.get(address)!;
          assert.ok(t === 0 ? u === 0 : u > 0 && Math.abs(u - t) <= 5, `${address}: timeout ${u} in ${b}, ${t} in ${a}`);
        }
      }
    }));

  test('the backend loads a sliced source through the native loader, slice by slice; a refused line in a late slice is dropped', () =>
    withNetns(async (ns) => {
      const saved = process.env.AMPERE_IPSET_LOADER;
      process.env.AMPERE_IPSET_LOADER = loader;
      try {
        const { log, lines } = captureLog();
        const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, log);
        await fw.init();
        const pulled: number[] = [];
        const slice = (k: number, text: string) => { pulled.push(k); return Buffer.from(text); };
        let families: readonly number[] = [];
        await fw.setAll({
          [Symbol.iterator]: () => [][Symbol.iterator](),
          renderSliced: (_format, fams) => {
            families = fams;
            return {
              count: 4,
              slices: (function* () {
                yield slice(0, 'add ampere-t4 192.0.2.1 timeout 0\nadd ampere-t6 2001:db8::1 timeout 0\n');
                yield slice(1, 'add ampere-t4 192.0.2.2 timeout 600\n');
                yield slice(2, 'add ampere-t4 192.0.2.03 timeout 0\nadd ampere-t4 192.0.2.4 timeout 0\n');
              })(),
            };
          },
        }, Date.now());
        assert.deepEqual([...families].sort(), [4, 6]);
        assert.deepEqual(pulled, [0, 1, 2], 'each slice pulled once (the retry reuses what was taken)');
        assert.deepEqual((await fw.list()).sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.4', '2001:db8::1']);
        const dropped = lines.filter((l) => l.msg === 'full load: the kernel refused a line; loading the other bans without it');
        assert.deepEqual(dropped.map((l) => l.line), ['add ampere-t4 192.0.2.03 timeout 0']);
        await fw.shutdown();
      } finally {
        if (saved === undefined) delete process.env.AMPERE_IPSET_LOADER; else process.env.AMPERE_IPSET_LOADER = saved;
      }
    }));

  test('the backend lists a set of 150,000 members (the start lists the kernel to adopt what the database lacks)', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      const v4Lines = Array.from({ length: 150_000 }, (_, i) => `add ampere-t4 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} timeout 0`);
      await fw.setAll(renderedBans({ 4: v4Lines.join('\n'), 6: '', count: v4Lines.length }), Date.now());
      const listed = [];
      for await (const b of await fw.listBans!()) listed.push(b);
      assert.equal(listed.length, 150_000);
      assert.equal(new Set(listed.map((b) => b.address)).size, 150_000);
      await fw.shutdown();
    }));

  for (const mode of ['native', 'ipset restore'] as const) {
    test(`the backend through ${mode}: a full load drops refused lines, a big batch adds and removes`, () =>
      withNetns(async (ns) => {
        const saved = process.env.AMPERE_IPSET_LOADER;
        process.env.AMPERE_IPSET_LOADER = mode === 'native' ? loader : 'off';
        try {
          assert.equal(nativeIpsetLoader(), mode === 'native' ? loader : null);
          const { log, lines } = captureLog();
          const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, log);
          await fw.init();
          const good = Array.from({ length: 6000 }, (_, i) => `198.18.${i >> 8}.${i & 255}`);
          const v4Lines = good.map((a) => `add ampere-t4 ${a} timeout 0`);
          v4Lines.splice(10, 0, 'add ampere-t4 0.0.0.0 timeout 0');
          await fw.setAll(renderedBans({ 4: v4Lines.join('\n'), 6: 'add ampere-t6 2001:db8::1 timeout 0', count: v4Lines.length + 1 }), Date.now());
          const held = new Set(await fw.list());
          assert.equal(held.size, 6001);
          assert.ok(!held.has('0.0.0.0'));
          assert.equal(lines.filter((l) => l.msg === 'full load: the kernel refused a line; loading the other bans without it').length, 1);
          // Above the live shell's limit: one bulk run each way.
          const batch: KernelBan[] = Array.from({ length: 3000 }, (_, i) => ({ address: `203.0.${i >> 8}.${i & 255}`, family: 4, until: null }));
          await fw.add(batch, Date.now());
          assert.equal((await fw.list()).length, 9001);
          await fw.remove(batch.concat(good.slice(0, 10).map((address) => ({ address, family: 4 as const, until: null }))));
          assert.equal((await fw.list()).length, 5991);
          assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
          await fw.shutdown();
        } finally {
          if (saved === undefined) delete process.env.AMPERE_IPSET_LOADER; else process.env.AMPERE_IPSET_LOADER = saved;
        }
      }));
  }
});
