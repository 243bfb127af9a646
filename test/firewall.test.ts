import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../src/log';
import { chooseIpv6, createBackend, detectIptables, FirewallQueue, ConntrackFlusher, renderedBans, type FirewallBackend, type KernelBan } from '../src/firewall';
import { filterRulesOfSave } from '../src/firewall/detect';
import { execStats, which } from '../src/firewall/exec';
import { IpsetBackend, splitLines } from '../src/firewall/ipset';
import { nativeIpsetLoader } from '../src/firewall/ipset-native';
import { Store, type NewBan } from '../src/store';
import { addAttacker, Netns, skipUnlessRoot, UdpSink, withNetns, type Attacker } from '../tools/lab/netns';

const skip = skipUnlessRoot();
const CHAIN = 'ampere';

/** A logger whose lines the tests can read. */
function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

const v4 = (address: string, until: number | null = null): KernelBan => ({ address, family: 4, until });
const v6 = (address: string, until: number | null = null): KernelBan => ({ address, family: 6, until });
const sorted = (a: string[]) => [...a].sort();

async function rulesOf(ns: Netns, tool: string, chain?: string): Promise<string[]> {
  const out = await ns.must(tool, ['-w', '-S', ...(chain ? [chain] : [])]);
  return out.split('\n').filter((l) => l.startsWith('-'));
}

const jumpsTo = (lines: string[], chain: string) => lines.filter((l) => l.startsWith('-A ') && / -j (\S+)/.exec(l)?.[1] === chain);

/** What the kernel holds, read without the backend's help. */
async function kernelBans(ns: Netns, kind: string, flavour: string): Promise<string[]> {
  const out: string[] = [];
  if (kind === 'ipset') {
    for (const set of [`${CHAIN}-v4`, `${CHAIN}-v6`]) {
      for (const l of (await ns.must('ipset', ['save', set])).split('\n')) if (l.startsWith('add ')) out.push(l.split(' ')[2]);
    }
  } else {
    for (const tool of [`iptables-${flavour}`, `ip6tables-${flavour}`]) {
      for (const l of await rulesOf(ns, tool, CHAIN)) {
        const m = /^-A \S+ -s (\S+)\/(32|128) /.exec(l);
        if (m) out.push(m[1]);
      }
    }
  }
  return sorted(out);
}

/** Runs fn with PATH set to dir (a folder of tool links the test made), then removes dir. */
/** Processes a full load runs: the native loader alone, or two `ipset restore`s. */
const loaders = () => (nativeIpsetLoader() ? 1 : 2);

async function withPath<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = dir;
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Make things that are not Ampere's: they must survive every operation untouched. */
async function makeOthers(ns: Netns, flavour: string): Promise<() => Promise<string>> {
  for (const tool of [`iptables-${flavour}`, `ip6tables-${flavour}`]) {
    await ns.must(tool, ['-w', '-N', 'other']);
    await ns.must(tool, ['-w', '-A', 'other', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await ns.must(tool, ['-w', '-A', 'INPUT', '-j', 'other']);
  }
  await ns.must('ipset', ['create', 'other-set', 'hash:ip']);
  await ns.must('ipset', ['add', 'other-set', '192.0.2.10']);
  return async () =>
    [
      ...(await rulesOf(ns, `iptables-${flavour}`)).filter((l) => !l.includes(CHAIN)),
      ...(await rulesOf(ns, `ip6tables-${flavour}`)).filter((l) => !l.includes(CHAIN)),
      ...(await ns.must('ipset', ['save', 'other-set'])).split('\n').filter((l) => l.startsWith('add')),
    ].join('\n');
}

for (const kind of ['ipset', 'rules'] as const) {
  for (const flavour of ['nft', 'legacy'] as const) {
    // Both targets get exercised: DROP with nft, REJECT with legacy.
    const target = flavour === 'nft' ? 'DROP' : 'REJECT';
    describe(`${kind} backend, iptables-${flavour}, ${target}`, { skip }, () => {
      let host: Netns;
      let att: Attacker;
      let sink: UdpSink;
      let fw: FirewallBackend;
      let others: () => Promise<string>;
      let othersBefore: string;
      const { log, lines } = captureLog();
      const ipt = `iptables-${flavour}`;
      const ip6t = `ip6tables-${flavour}`;

      before(async () => {
        host = await Netns.create();
        att = await addAttacker(host);
        sink = await UdpSink.start(host);
        others = await makeOthers(host, flavour);
        othersBefore = await others();
        fw = await createBackend(kind, { chain: CHAIN, target, iptables: flavour, netns: host.name }, log);
      });
      after(async () => {
        await att?.ns.destroy();
        await host?.destroy();
      });

      test('init creates the chain and exactly one jump, also when run twice', async () => {
        await fw.init();
        await fw.init();
        for (const tool of [ipt, ip6t]) {
          const all = await rulesOf(host, tool);
          assert.ok(all.includes(`-N ${CHAIN}`), `${tool}: chain exists`);
          assert.deepEqual(jumpsTo(all, CHAIN), [`-A INPUT -j ${CHAIN}`], `${tool}: one jump`);
          assert.equal(all.find((l) => l.startsWith('-A INPUT')), `-A INPUT -j ${CHAIN}`, `${tool}: jump comes first`);
          const mine = await rulesOf(host, tool, CHAIN);
          assert.equal(mine.at(-1), `-A ${CHAIN} -j RETURN`);
        }
        const inserted = lines.filter((l) => String(l.msg).includes('inserted -I INPUT 1'));
        assert.deepEqual(inserted.map((l) => l.family).sort(), [4, 6], 'logged once per family');
        assert.equal(await others(), othersBefore);
      });

      test('setAll loads exactly the given bans, RETURN last, others untouched', async () => {
        const now = Date.now();
        await fw.setAll([v4('192.0.2.1'), v4('192.0.2.2', now + 3_600_000), v6('2001:db8::1'), v4('192.0.2.3', now - 1), v6('2001:db8::2', now + 10 * 365 * 86_400_000)], now);
        const want = sorted(['192.0.2.1', '192.0.2.2', '2001:db8::1', '2001:db8::2']);
        assert.deepEqual(await kernelBans(host, kind, flavour), want, 'expired 192.0.2.3 skipped');
        assert.deepEqual(sorted(await fw.list()), want);
        for (const [tool, fam] of [[ipt, 4], [ip6t, 6]] as const) {
          const mine = await rulesOf(host, tool, CHAIN);
          assert.equal(mine.at(-1), `-A ${CHAIN} -j RETURN`);
          const reject = fam === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
          const t = target === 'DROP' ? 'DROP' : `REJECT --reject-with ${reject}`;
          if (kind === 'ipset') assert.deepEqual(mine.slice(1), [`-A ${CHAIN} -m set --match-set ${CHAIN}-n${fam} src -j ${t}`, `-A ${CHAIN} -m set --match-set ${CHAIN}-v${fam} src -j ${t}`, `-A ${CHAIN} -j RETURN`]);
          else assert.ok(mine.slice(1, -1).every((l) => l.endsWith(`-j ${t}`)), mine.join('\n'));
        }
        if (kind === 'ipset') {
          // Timeouts: permanent and longer-than-ipset bans load as 0, the hour-long one counts down.
          const save = await host.must('ipset', ['save', `${CHAIN}-v4`]);
          assert.match(save, /add ampere-v4 192\.0\.2\.1 timeout 0\b/);
          assert.match(save, /add ampere-v4 192\.0\.2\.2 timeout 3[56]\d\d\b/);
          assert.match(await host.must('ipset', ['save', `${CHAIN}-v6`]), /add ampere-v6 2001:db8::2 timeout 0\b/);
          assert.doesNotMatch(await host.must('ipset', ['list', '-n']), /ampere-t[46]/, 'scratch sets are gone');
        }
        // A second setAll replaces, not merges.
        await fw.setAll([v4('192.0.2.9'), v6('2001:db8::9')], Date.now());
        assert.deepEqual(await kernelBans(host, kind, flavour), sorted(['192.0.2.9', '2001:db8::9']));
        assert.equal(await others(), othersBefore);
        for (const tool of [ipt, ip6t]) assert.equal(jumpsTo(await rulesOf(host, tool), CHAIN).length, 1);
      });

      test('add, remove, re-add: no duplicates, absent removal is fine, expired skipped', async () => {
        const now = Date.now();
        await fw.setAll([], now);
        await fw.add([v4('198.51.100.1'), v6('2001:db8::a'), v4('198.51.100.1'), v4('198.51.100.2', now - 5)], now);
        await fw.add([v4('198.51.100.1'), v6('2001:db8::a')], now);
        assert.deepEqual(await kernelBans(host, kind, flavour), sorted(['198.51.100.1', '2001:db8::a']));
        await fw.remove([{ address: '198.51.100.1', family: 4 }, { address: '203.0.113.77', family: 4 }, { address: '2001:db8::a', family: 6 }]);
        assert.deepEqual(await kernelBans(host, kind, flavour), []);
        await fw.remove([{ address: '198.51.100.1', family: 4 }]);
        await fw.add([v4('198.51.100.1'), v6('2001:db8::a')], now);
        await fw.add([v4('198.51.100.1')], now);
        assert.deepEqual(await kernelBans(host, kind, flavour), sorted(['198.51.100.1', '2001:db8::a']));
        for (const tool of [ipt, ip6t]) assert.equal((await rulesOf(host, tool, CHAIN)).at(-1), `-A ${CHAIN} -j RETURN`);
        assert.equal(await others(), othersBefore);
      });

      test('packets from a banned address are dropped, from others they arrive (IPv4, IPv6)', async () => {
        await fw.setAll([], Date.now());
        for (const [fam, to] of [['v4', att.hostV4], ['v6', att.hostV6]] as const) {
          const [bad, good] = att[fam];
          assert.equal(await sink.passes(att.ns, bad, to), true, `${bad} arrives before the ban`);
          await fw.add([fam === 'v4' ? v4(bad) : v6(bad)], Date.now());
          assert.equal(await sink.reaches(att.ns, bad, to, 300), false, `${bad} dropped while banned`);
          assert.equal(await sink.passes(att.ns, good, to), true, `${good} still arrives`);
          await fw.remove([{ address: bad, family: fam === 'v4' ? 4 : 6 }]);
          assert.equal(await sink.passes(att.ns, bad, to), true, `${bad} arrives after unban`);
        }
      });

      if (kind === 'ipset') {
        test('a ban with a 2 s end leaves the set by itself, and the host gets through again', async () => {
          await fw.setAll([v4(att.v4[0], Date.now() + 60_000)], Date.now());
          const now = Date.now();
          await fw.add([v4(att.v4[1], now + 2000), v6(att.v6[1], now + 2000)], now);
          assert.deepEqual(sorted(await fw.list()), sorted([att.v4[0], att.v4[1], att.v6[1]]));
          assert.equal(await sink.reaches(att.ns, att.v4[1], att.hostV4, 300), false);
          await new Promise((r) => setTimeout(r, 2300 - (Date.now() - now)));
          assert.deepEqual(await fw.list(), [att.v4[0]]);
          assert.equal(await sink.passes(att.ns, att.v4[1], att.hostV4), true);
        });
      }

      test('invalid addresses are refused before anything runs', async () => {
        const runs = execStats.runs;
        const bad = [
          { address: '1.2.3.4; rm -rf /', family: 4 as const, until: null },
          { address: '::1 -j ACCEPT', family: 6 as const, until: null },
          { address: '1.2.3.4', family: 6 as const, until: null },
          { address: '01.2.3.4', family: 4 as const, until: null },
          { address: '2001:DB8::1', family: 6 as const, until: null },
        ];
        const notHosts = [v4('0.0.0.0'), v4('224.0.0.1'), v4('255.255.255.255'), v4('240.0.0.1'), v6('::'), v6('ff02::1')];
        for (const b of bad) {
          await assert.rejects(fw.add([v4('192.0.2.50'), b], Date.now()), /refusing non-canonical address/);
          await assert.rejects(fw.remove([b]), /refusing/);
        }
        for (const b of notHosts) {
          await assert.rejects(fw.add([v4('192.0.2.50'), b], Date.now()), /not a single host/);
          await assert.rejects(fw.remove([b]), /not a single host/);
        }
        assert.equal(execStats.runs, runs, 'no process was started');
        assert.ok(!(await kernelBans(host, kind, flavour)).includes('192.0.2.50'), 'the good half of a refused batch is not applied either');
        // A full load leaves them out and loads the rest (one bad stored row must not sink it).
        const before = await kernelBans(host, kind, flavour);
        await fw.setAll([...before.map((a) => (a.includes(':') ? v6(a) : v4(a))), ...bad, ...notHosts, v4('192.0.2.51')], Date.now());
        assert.deepEqual(await kernelBans(host, kind, flavour), sorted([...before, '192.0.2.51']));
      });
    });
  }
}

describe('an existing jump placed by the administrator', { skip }, () => {
  // Directly in INPUT (the original README's way), or through a chain of their own.
  const placements = {
    ipset: { setup: [['-A', 'INPUT', '-p', 'udp', '--dport', '5060', '-j', CHAIN]], jump: `-A INPUT -p udp -m udp --dport 5060 -j ${CHAIN}` },
    rules: { setup: [['-N', 'sip'], ['-A', 'sip', '-j', CHAIN], ['-A', 'INPUT', '-p', 'udp', '-j', 'sip']], jump: `-A sip -j ${CHAIN}` },
  };
  for (const [kind, iptables] of [['ipset', 'nft'], ['ipset', 'auto'], ['rules', 'nft']] as const) {
    test(`${kind}, iptables=${iptables}: is respected, no second jump is added (${placements[kind].jump})`, () =>
      withNetns(async (ns) => {
        for (const tool of ['iptables-nft', 'ip6tables-nft']) {
          await ns.must(tool, ['-w', '-N', CHAIN]);
          for (const args of placements[kind].setup) await ns.must(tool, ['-w', ...args]);
        }
        const { log, lines } = captureLog();
        // auto: init takes the filter tables flavour detection read instead of listing them.
        const fw = await createBackend(kind, { chain: CHAIN, target: 'DROP', iptables, netns: ns.name }, log);
        await fw.init();
        await fw.setAll([v4('192.0.2.1'), v6('2001:db8::1')], Date.now());
        await fw.init();
        for (const tool of ['iptables-nft', 'ip6tables-nft']) {
          assert.deepEqual(jumpsTo(await rulesOf(ns, tool), CHAIN), [placements[kind].jump]);
        }
        assert.equal(lines.filter((l) => String(l.msg).includes('inserted')).length, 0);
        assert.deepEqual(sorted(await fw.list()), ['192.0.2.1', '2001:db8::1']);
      }));
  }

  for (const kind of ['ipset', 'rules'] as const) {
    test(`${kind}: after a firewall wipe, setAll alone brings back chain, jump, sets and bans`, () =>
      withNetns(async (ns) => {
        const { log, lines } = captureLog();
        const fw = await createBackend(kind, { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, log);
        await fw.init();
        await fw.setAll([v4('192.0.2.1')], Date.now());
        for (const tool of ['iptables-nft', 'ip6tables-nft']) for (const op of ['-F', '-X']) await ns.must(tool, ['-w', op]);
        if (kind === 'ipset') await ns.must('ipset', ['destroy']);
        await fw.setAll([v4('192.0.2.1'), v6('2001:db8::1')], Date.now());
        assert.deepEqual(await kernelBans(ns, kind, 'nft'), ['192.0.2.1', '2001:db8::1']);
        for (const tool of ['iptables-nft', 'ip6tables-nft']) assert.deepEqual(jumpsTo(await rulesOf(ns, tool), CHAIN), [`-A INPUT -j ${CHAIN}`]);
        assert.equal(lines.filter((l) => String(l.msg).includes('inserted')).length, 4, 'logged: 2 at init, 2 at the repair');
      }));
  }

  test('ipset: a big setAll (streamed in chunks to two parallel restores) loads every ban, once, with its timeout', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      const now = Date.now();
      const bans: KernelBan[] = [];
      for (let i = 0; i < 20_000; i++) bans.push(v4(`198.18.${i >> 8}.${i & 255}`, i % 2 ? null : now + 3_600_000));
      for (let i = 0; i < 3_000; i++) bans.push(v6(`fd33::${(i + 1).toString(16)}`, now + 7_200_000));
      bans.push(v4('192.0.2.7', now - 1)); // already over: skipped
      const runs = execStats.runs;
      await fw.setAll(bans, now);
      assert.equal(execStats.runs - runs, loaders(), 'right after init: the loaders, nothing else (sets made and swapped through the live shell)');
      const count = async (set: string) => Number(/Number of entries: (\d+)/.exec(await ns.must('ipset', ['list', '-t', set]))?.[1]);
      assert.equal(await count(`${CHAIN}-v4`), 20_000);
      assert.equal(await count(`${CHAIN}-v6`), 3_000);
      const save4 = await ns.must('ipset', ['save', `${CHAIN}-v4`]);
      assert.match(save4, /add ampere-v4 198\.18\.0\.1 timeout 0\b/);
      assert.match(save4, /add ampere-v4 198\.18\.78\.30 timeout 3[56]\d\d\b/);
      assert.doesNotMatch(save4, /192\.0\.2\.7/);
      assert.match(await ns.must('ipset', ['save', `${CHAIN}-v6`]), /add ampere-v6 fd33::bb8 timeout (71|72)\d\d\b/);
      // Not fresh any more: the next setAll looks at the kernel again and replaces everything.
      await fw.setAll([v4('192.0.2.9')], Date.now());
      assert.deepEqual(await kernelBans(ns, 'ipset', 'nft'), ['192.0.2.9']);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/, 'scratch sets are gone');
    }));

  test('ipset: bans the store rendered (setAllLines) load as setAll loads the same bans; a bad line fails whole, the live set untouched', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      const dir = mkdtempSync(join(tmpdir(), 'ampere-lines-'));
      const store = new Store(join(dir, 'ampere.db'));
      try {
        const now = Date.now();
        const row = (address: string, until: number | null): NewBan => ({ address, family: address.includes(':') ? 6 : 4, now: now - 1000, until, reasonKind: 'InvalidPassword', reasonService: 'PJSIP', reasonAccount: '100', failures: 3, source: 'auto' });
        const rows: NewBan[] = [];
        for (let i = 0; i < 6_000; i++) rows.push(row(`198.18.${i >> 8}.${i & 255}`, i % 3 ? now + 3_600_000 + i : null));
        for (let i = 0; i < 700; i++) rows.push(row(`fd33::${(i + 1).toString(16)}`, now + 7_200_000));
        rows.push(row('192.0.2.5', now + 30 * 86_400_000)); // beyond ipset's maximum: no timeout, the daemon lifts it
        store.bans.recordBans(rows);
        const saved = async () => {
          const out = new Map<string, number>();
          for (const set of [`${CHAIN}-v4`, `${CHAIN}-v6`]) {
            for (const l of (await ns.must('ipset', ['save', set])).split('\n')) {
              const m = /^add \S+ (\S+) timeout (\d+)$/.exec(l);
              if (m) out.set(m[1], Number(m[2]));
            }
          }
          return out;
        };
        const runs = execStats.runs;
        const lines = store.bans.renderActiveBans(now, (fw as IpsetBackend).lineFormat);
        assert.equal(lines.count, 6_701);
        await fw.setAll(renderedBans(lines), Date.now());
        assert.equal(execStats.runs - runs, loaders(), 'right after init: the loaders, nothing else');
        const viaLines = await saved();
        await fw.setAll(store.bans.activeKernelBans(now), now);
        const viaSetAll = await saved();
        assert.equal(viaLines.size, 6_701);
        assert.deepEqual([...viaLines.keys()].sort(), [...viaSetAll.keys()].sort());
        for (const [address, t] of viaLines) {
          const u = viaSetAll.get(address)!;
          assert.ok(t === 0 ? u === 0 : Math.abs(t - u) <= 2, `${address}: ${t} by lines, ${u} by setAll`);
        }
        assert.equal(viaLines.get('192.0.2.5'), 0);
        assert.equal(viaLines.get('198.18.0.0'), 0);
        assert.ok(Math.abs(viaLines.get('fd33::1')! - 7200) <= 2);
        // A line ipset refuses is dropped and the rest loaded; a load that fails for another
        // reason swaps nothing in.
        await assert.rejects(fw.setAll(renderedBans({ 4: 'add ampere-t4 192.0.2.1 timeout 0\nnonsense', 6: '', count: 2 }), Date.now()), /ipset restore|ampere-ipset-load/);
        assert.equal((await saved()).size, 6_701, 'the live sets are untouched');
        assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/, 'the failed load removed its scratch sets');
        await fw.setAll(renderedBans({ 4: 'add ampere-t4 192.0.2.1 timeout 0\nadd ampere-t4 192.0.2.300 timeout 0', 6: '', count: 2 }), Date.now());
        assert.deepEqual([...(await saved()).keys()], ['192.0.2.1']);
      } finally {
        store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }));

  test('ipset: a live set left with other parameters (an older maxelem) is kept by init and replaced by the first full load', () =>
    withNetns(async (ns) => {
      await ns.must('ipset', ['create', `${CHAIN}-v4`, 'hash:ip', 'family', 'inet', 'maxelem', '65536', 'timeout', '0']);
      await ns.must('ipset', ['add', `${CHAIN}-v4`, '192.0.2.50']);
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      assert.match(await ns.must('ipset', ['list', '-t', `${CHAIN}-v4`]), /maxelem 65536/, 'init leaves it (rules may use it)');
      assert.match(await ns.must('ipset', ['list', '-t', `${CHAIN}-v6`]), /maxelem 1048576/, 'the missing one is made');
      await fw.setAll([v4('192.0.2.1'), v6('2001:db8::1')], Date.now());
      assert.match(await ns.must('ipset', ['list', '-t', `${CHAIN}-v4`]), /maxelem 1048576/);
      assert.deepEqual(await kernelBans(ns, 'ipset', 'nft'), ['192.0.2.1', '2001:db8::1']);
    }));

  test('ipset: a streamed setAll that meets a bad address half-way leaves it out and loads the rest', () =>
    withNetns(async (ns) => {
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      await fw.setAll([v4('192.0.2.1'), v6('2001:db8::1')], Date.now());
      function* stream(): Generator<KernelBan> {
        for (let i = 0; i < 10_000; i++) yield v4(`198.18.${i >> 8}.${i & 255}`);
        yield { address: '1.2.3.4 -j ACCEPT', family: 4, until: null };
        yield v4('192.0.2.99');
      }
      await fw.setAll(stream(), Date.now());
      const held = await kernelBans(ns, 'ipset', 'nft');
      assert.equal(held.length, 10_001);
      assert.ok(held.includes('192.0.2.99') && !held.includes('192.0.2.1'));
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/, 'no scratch set left');
      await fw.setAll([v4('192.0.2.2')], Date.now());
      assert.deepEqual(await kernelBans(ns, 'ipset', 'nft'), ['192.0.2.2']);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
    }));

  test('rules: bans kept from before a restart are known, so re-adding them makes no duplicate', () =>
    withNetns(async (ns) => {
      const opts = { chain: CHAIN, target: 'DROP' as const, iptables: 'nft' as const, netns: ns.name };
      const first = await createBackend('rules', opts, captureLog().log);
      await first.init();
      await first.add([v4('192.0.2.1')], Date.now());
      const second = await createBackend('rules', opts, captureLog().log); // a restarted daemon
      await second.init();
      await second.add([v4('192.0.2.1'), v4('192.0.2.2')], Date.now());
      const rules = await rulesOf(ns, 'iptables-nft', CHAIN);
      assert.equal(rules.filter((l) => l.includes('192.0.2.1/32')).length, 1);
      assert.equal(rules.at(-1), `-A ${CHAIN} -j RETURN`);
      // Someone deleted a rule behind our back: removal still succeeds for the rest.
      await ns.must('iptables-nft', ['-w', '-D', CHAIN, '-s', '192.0.2.2/32', '-j', 'DROP']);
      await second.remove([{ address: '192.0.2.1', family: 4 }, { address: '192.0.2.2', family: 4 }]);
      assert.deepEqual(await second.list(), []);
    }));
});

describe('the kernel: what is per network namespace', { skip }, () => {
  test('ipset sets and iptables chains (both flavours) of one namespace are invisible in another', () =>
    withNetns((a) =>
      withNetns(async (b) => {
        await a.must('ipset', ['create', 'probe-set', 'hash:ip', 'timeout', '0']);
        await a.must('iptables-nft', ['-w', '-N', 'probe-nft']);
        await a.must('iptables-legacy', ['-w', '-N', 'probe-legacy']);
        assert.match(await a.must('ipset', ['list', '-n']), /probe-set/);
        assert.doesNotMatch(await b.must('ipset', ['list', '-n']), /probe-set/);
        assert.match(await a.must('iptables-legacy', ['-w', '-S']), /-N probe-legacy/);
        assert.doesNotMatch(await b.must('iptables-nft', ['-w', '-S']), /probe/);
        assert.doesNotMatch(await b.must('iptables-legacy', ['-w', '-S']), /probe/);
        // And the two flavours do not see each other's rules (hence the detection).
        assert.doesNotMatch(await a.must('iptables-nft', ['-w', '-S']), /probe-legacy/);
        assert.doesNotMatch(await a.must('iptables-legacy', ['-w', '-S']), /probe-nft/);
      })));
});

describe('iptables flavour detection (inside a namespace)', { skip }, () => {
  test('no rules anywhere: nft', () =>
    withNetns(async (ns) => {
      const t = await detectIptables({ iptables: 'auto', netns: ns.name });
      assert.equal(t.flavour, 'nft');
      assert.equal(t.iptables, 'iptables-nft');
      assert.equal(t.ip6tablesRestore, 'ip6tables-nft-restore');
      assert.match(t.reason, /legacy 0 rules, nft 0 rules/);
    }));

  test('rules placed with iptables-legacy: legacy; more nft rules: nft', () =>
    withNetns(async (ns) => {
      await ns.must('iptables-legacy', ['-w', '-A', 'INPUT', '-p', 'udp', '--dport', '5060', '-j', 'ACCEPT']);
      await ns.must('ip6tables-legacy', ['-w', '-A', 'INPUT', '-p', 'udp', '--dport', '5060', '-j', 'ACCEPT']);
      const t = await detectIptables({ iptables: 'auto', netns: ns.name });
      assert.equal(t.flavour, 'legacy');
      assert.equal(t.iptables, 'iptables-legacy');
      assert.equal(t.iptablesRestore, 'iptables-legacy-restore');
      assert.match(t.reason, /legacy 2 rules, nft 0 rules/);
      for (const port of ['1', '2', '3']) await ns.must('iptables-nft', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', port, '-j', 'ACCEPT']);
      const u = await detectIptables({ iptables: 'auto', netns: ns.name });
      assert.equal(u.flavour, 'nft');
      assert.match(u.reason, /legacy 2 rules, nft 3 rules/);
      // The override wins over what is found.
      assert.equal((await detectIptables({ iptables: 'legacy', netns: ns.name })).flavour, 'legacy');
    }));
});

describe('missing binaries', () => {
  /** PATH holding links to every needed tool except the ones named. */
  function pathWithout(missing: string[]): string {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-path-'));
    const tools = ['ip', 'ipset', 'conntrack', ...['', '-restore', '-save'].flatMap((s) => ['nft', 'legacy'].flatMap((f) => [`iptables-${f}${s}`, `ip6tables-${f}${s}`]))];
    for (const t of tools) {
      const p = which(t);
      if (p && !missing.includes(t)) symlinkSync(p, join(dir, t));
    }
    return dir;
  }

  test('ipset without stdbuf (no live shell): a full load makes, loads and swaps its sets with processes', { skip }, () =>
    withNetns((ns) => withPath(pathWithout([]), async () => {
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name }, captureLog().log);
      await fw.init();
      const now = Date.now();
      const bans: KernelBan[] = [];
      for (let i = 0; i < 9_000; i++) bans.push(v4(`198.18.${i >> 8}.${i & 255}`, now + 3_600_000));
      bans.push(v6('2001:db8::1'));
      const runs = execStats.runs;
      await fw.setAll(bans, now);
      // Native: scratch sets cleared, made, loaded, swapped; ipset restore: two loaders make them.
      assert.equal(execStats.runs - runs, 4, 'old scratch sets cleared, loaded, swapped');
      assert.equal((await kernelBans(ns, 'ipset', 'nft')).length, 9_001);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
      // A failing load cleans up the same way.
      await assert.rejects(fw.setAll(renderedBans({ 4: 'add ampere-t4 192.0.2.1 timeout 0\nnonsense', 6: '', count: 2 }), Date.now()), /ipset restore|ampere-ipset-load/);
      assert.equal((await kernelBans(ns, 'ipset', 'nft')).length, 9_001, 'live sets untouched');
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
      // A bad address is left out, a line the kernel refuses dropped: the rest is loaded.
      function* bad(): Generator<KernelBan> { for (let i = 0; i < 9_000; i++) yield v4(`198.19.${i >> 8}.${i & 255}`); yield { address: 'x', family: 4, until: null }; }
      await fw.setAll(bad(), now);
      assert.equal((await kernelBans(ns, 'ipset', 'nft')).length, 9_000);
      await fw.setAll(renderedBans({ 4: 'add ampere-t4 192.0.2.1 timeout 0\nadd ampere-t4 0.0.0.0 timeout 0\nadd ampere-t4 192.0.2.2 timeout 0', 6: '', count: 3 }), Date.now());
      assert.deepEqual(await kernelBans(ns, 'ipset', 'nft'), ['192.0.2.1', '192.0.2.2']);
      assert.doesNotMatch(await ns.must('ipset', ['list', '-n']), /ampere-t[46]/);
    })));

  test('no iptables at all', () =>
    withPath(pathWithout(['iptables-nft', 'iptables-legacy']), async () => {
      await assert.rejects(detectIptables({ iptables: 'auto' }), /iptables not found: install iptables/);
      await assert.rejects(detectIptables({ iptables: 'nft' }), /iptables-nft not found/);
    }));

  test('only one flavour installed: that one, without looking at rules', () =>
    withPath(pathWithout(['iptables-nft-restore']), async () => {
      const runs = execStats.runs;
      const t = await detectIptables({ iptables: 'auto' });
      assert.equal(t.flavour, 'legacy');
      assert.match(t.reason, /only iptables-legacy/);
      assert.equal(execStats.runs, runs);
    }));

  test('ipset missing: init names it, nothing runs', () =>
    withPath(pathWithout(['ipset']), async () => {
      const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: 'ampt-never-created' }, captureLog().log);
      const runs = execStats.runs;
      await assert.rejects(fw.init(), /ipset not found in PATH: install it \(package ipset\)/);
      assert.equal(execStats.runs, runs);
    }));

  test('conntrack missing: one warning, not fatal', () =>
    withPath(pathWithout(['conntrack']), async () => {
      const { log, lines } = captureLog();
      const c = new ConntrackFlusher(log, 'ampt-never-created');
      c.flush([{ address: '192.0.2.1', family: 4 }]);
      c.flush([{ address: '192.0.2.2', family: 4 }]);
      await c.idle();
      assert.equal(lines.filter((l) => l.level === 40 && String(l.msg).includes('conntrack not found')).length, 1);
      assert.equal(c.starts, 0, 'no helper started');
    }));
});

describe('a kernel without IPv6 (ipv6.disable=1), played by ip6tables that fail as they do there', { skip }, () => {
  /** PATH with every tool, but ip6tables* answering as on a kernel without IPv6. */
  function pathWithoutIpv6(): string {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-noip6-'));
    for (const t of ['ip', 'ipset', 'stdbuf', ...['', '-restore', '-save'].flatMap((sfx) => ['nft', 'legacy'].map((f) => `iptables-${f}${sfx}`))]) {
      const p = which(t);
      if (p) symlinkSync(p, join(dir, t));
    }
    for (const f of ['nft', 'legacy']) {
      for (const sfx of ['', '-restore', '-save']) {
        const name = `ip6tables-${f}${sfx}`;
        writeFileSync(join(dir, name), `#!/bin/sh\necho "${name}: can't initialize ip6tables table \\\`filter': Address family not supported by protocol" >&2\nexit 3\n`);
        chmodSync(join(dir, name), 0o755);
      }
    }
    return dir;
  }

  test('chooseIpv6: auto follows /proc/net/if_inet6; on and off are taken as said', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-inet6-'));
    try {
      const probe = join(dir, 'if_inet6');
      assert.deepEqual(chooseIpv6('auto', probe), { on: false, reason: `auto: the kernel has no IPv6 (${probe} missing)` });
      writeFileSync(probe, '');
      assert.equal(chooseIpv6('auto', probe).on, true);
      assert.equal(chooseIpv6('off', probe).on, false);
      assert.equal(chooseIpv6('on', join(dir, 'absent')).on, true);
      assert.equal(chooseIpv6('auto').on, true, 'this machine has IPv6');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const kind of ['ipset', 'rules'] as const) {
    test(`${kind}: with IPv6 on, init fails on ip6tables; with IPv6 off it never runs ip6tables, IPv4 bans work, IPv6 bans stay out`, () =>
      withNetns((ns) => withPath(pathWithoutIpv6(), async () => {
        const opts = { chain: CHAIN, target: 'DROP' as const, iptables: 'nft' as const, netns: ns.name };
        const { log, lines } = captureLog();
        const fw = await createBackend(kind, { ...opts, ipv6: false }, log);
        assert.deepEqual(fw.families, [4]);
        await fw.init();
        const q = new FirewallQueue(fw, log, { conntrack: null });
        const now = Date.now();
        await q.setAll([v4('192.0.2.1', now + 60_000), v6('2001:db8::1', now + 60_000)], now);
        await q.add([v4('192.0.2.2'), v6('2001:db8::2')], now);
        await q.add([v6('2001:db8::3')], now);
        await q.remove([v6('2001:db8::2')]);
        await q.idle();
        assert.equal(q.healthy, true, 'no kernel command failed');
        assert.equal(q.v6LeftOut, 4, 'every IPv6 ban and unban left out');
        assert.equal(lines.filter((l) => l.level === 40 && String(l.msg).startsWith('IPv6 is off')).length, 1, 'one warning');
        assert.deepEqual(sorted(await fw.list()), ['192.0.2.1', '192.0.2.2']);
        if (kind === 'ipset') {
          assert.deepEqual((await ns.must('ipset', ['list', '-n'])).split('\n').filter((n) => n.startsWith(CHAIN)), [`${CHAIN}-n4`, `${CHAIN}-v4`], 'no IPv6 set made');
          // A full load the store rendered: its IPv6 lines are not loaded either.
          await fw.setAll(renderedBans({ 4: `add ${CHAIN}-t4 192.0.2.3 timeout 0`, 6: `add ${CHAIN}-t6 2001:db8::4 timeout 0`, count: 2 }), Date.now());
          assert.deepEqual(await fw.list(), ['192.0.2.3']);
        }
        // IPv4 is really enforced: the chain is jumped to and matches.
        assert.equal(jumpsTo(await rulesOf(ns, 'iptables-nft', 'INPUT'), CHAIN).length, 1);
        await fw.shutdown();
        // What IPv6 on does on such a kernel (before this setting existed: the daemon did not start).
        const on = await createBackend(kind, opts, captureLog().log);
        await assert.rejects(on.init(), /Address family not supported/);
        await on.shutdown();
      })));
  }
});

describe('splitLines (a full load shared between the loaders)', () => {
  test('every line in exactly one part, in order, none cut; parts of about equal length', () => {
    assert.deepEqual(splitLines('', 2), ['', '']);
    assert.deepEqual(splitLines('a', 2), ['a', '']);
    assert.deepEqual(splitLines('a\nb', 2), ['a', 'b']);
    assert.deepEqual(splitLines('a\nb\nc', 1), ['a\nb\nc']);
    const lines = Array.from({ length: 1001 }, (_, i) => `add ampere-t4 198.18.${i >> 8}.${i & 255} timeout ${i}`);
    for (const n of [2, 3, 7]) {
      const parts = splitLines(lines.join('\n'), n);
      assert.equal(parts.length, n);
      assert.deepEqual(parts.flatMap((p) => p.split('\n')), lines);
      const sizes = parts.map((p) => p.length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) < 2 * 40, `${n}: ${sizes}`);
    }
  });
});

describe('chain names', () => {
  test('bad or too long chain names are refused clearly', () => {
    const tools = { flavour: 'nft' as const, iptables: 'iptables-nft', ip6tables: 'ip6tables-nft', iptablesRestore: 'iptables-nft-restore', ip6tablesRestore: 'ip6tables-nft-restore', reason: '' };
    const log = captureLog().log;
    assert.throws(() => new IpsetBackend({ chain: 'x'.repeat(29), target: 'DROP', iptables: 'nft' }, tools, log), /at most 28 characters/);
    assert.throws(() => new IpsetBackend({ chain: 'a b', target: 'DROP', iptables: 'nft' }, tools, log), /invalid chain name/);
    assert.throws(() => new IpsetBackend({ chain: 'INPUT', target: 'DROP', iptables: 'nft' }, tools, log), /built-in chain or target/);
    // The config's rule and the backends' are one (src/firewall/names.ts): what config takes, they take.
    assert.equal(new IpsetBackend({ chain: 'amp.ere', target: 'DROP', iptables: 'nft' }, tools, log).setName(4), 'amp.ere-v4');
    assert.equal(new IpsetBackend({ chain: 'ampere-firewall', target: 'DROP', iptables: 'nft' }, tools, log).setName(6), 'ampere-firewall-v6');
  });
});

describe('the filter table as flavour detection reads it', { skip }, () => {
  for (const flavour of ['nft', 'legacy'] as const) {
    test(`${flavour}: filterRulesOfSave(iptables-save) holds exactly what iptables -S prints, both families`, () =>
      withNetns(async (ns) => {
        for (const fam of ['iptables', 'ip6tables']) {
          const tool = `${fam}-${flavour}`;
          await ns.must(tool, ['-w', '-N', CHAIN]);
          await ns.must(tool, ['-w', '-N', 'sip']);
          await ns.must(tool, ['-w', '-A', 'sip', '-j', CHAIN]);
          await ns.must(tool, ['-w', '-A', 'INPUT', '-p', 'udp', '--dport', '5060', '-j', 'sip']);
          await ns.must(tool, ['-w', '-P', 'FORWARD', 'DROP']);
          await ns.must(tool, ['-w', '-t', 'nat', '-N', 'other']); // another table: not part of it
          const save = await ns.must(`${tool}-save`, []);
          const listed = (await ns.must(tool, ['-w', '-t', 'filter', '-S'])).split('\n').filter((l) => l.startsWith('-'));
          assert.deepEqual(sorted(filterRulesOfSave(save)), sorted(listed), tool);
          assert.ok(listed.includes(`-N ${CHAIN}`) && listed.includes('-P FORWARD DROP'));
        }
      }));
  }
});
