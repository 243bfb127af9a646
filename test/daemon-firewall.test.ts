import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { childrenOf, niceness } from '../tools/lab/proc';
import { ampere } from './helpers/cli';
import { amiEvent } from '../tools/lab/ami';
import type { FakeAmiProcess } from '../tools/lab/ami-proc';
import { skipUnlessRoot, UdpSink, type Attacker, type Netns } from '../tools/lab/netns';
import { PbxLab } from '../tools/lab/pbx-lab';
import { eventually } from './helpers/eventually';

/**
 * The real daemon inside a PBX namespace, a real kernel firewall (iptables + ipset) there,
 * an attacker namespace on a veth pair, AMI events from a fake Asterisk in the same namespace.
 */
const skip = skipUnlessRoot();

for (const backend of ['ipset', 'rules'] as const) {
  describe(`daemon with the ${backend} backend in a namespace`, { skip }, () => {
    let lab: PbxLab;
    let pbx: Netns;
    let atk: Attacker;
    let sink: UdpSink;
    let ami: FakeAmiProcess;
    let dir: string;
    const startDaemon = (extra: Record<string, string> = {}) => lab.daemon(lab.env(backend, { AMPERE_ALLOW: `${atk.v4[1]},${atk.v6[1]}`, ...extra }));
    const failures = async (address: string, n: number) => {
      for (let i = 0; i < n; i++) await ami.send(amiEvent('ChallengeResponseFailed', address));
    };
    const ipt = async (family: 4 | 6, ...args: string[]) => pbx.must(family === 4 ? 'iptables' : 'ip6tables', ['-w', ...args]);
    /** Addresses the kernel blocks, read straight from the kernel. */
    const kernelBans = async (family: 4 | 6): Promise<string[]> => {
      if (backend === 'ipset') {
        const out = await pbx.must('ipset', ['list', `ampere-v${family}`, '-output', 'save']);
        return out.split('\n').filter((l) => l.startsWith('add ')).map((l) => l.split(' ')[2]).sort();
      }
      const out = await ipt(family, '-S', 'ampere');
      return out.split('\n').filter((l) => / -s /.test(l)).map((l) => l.split(' ')[3].replace(/\/(32|128)$/, '')).sort();
    };

    before(async () => {
      lab = await PbxLab.create(`fw-${backend}`);
      ({ pbx, atk, sink, ami, dir } = lab);
    });
    after(() => lab?.destroy());

    test('from nothing: chain, one jump, RETURN last; attackers banned on their 3rd failure and really dropped', async () => {
      for (const a of [atk.v4[0], atk.v6[0]]) assert.equal(await sink.passes(atk.ns, a, a.includes(':') ? atk.hostV6 : atk.hostV4), true, `${a} reaches before any ban`);
      const d = startDaemon();
      await ami.waitForLogins(1);
      await d.waitFor((l) => l.msg === 'ampere started');
      // nice = -10 (default), set before any process starts: the ipset shell inherits it, the
      // conntrack helper runs 10 lower.
      assert.equal(d.count((l) => l.msg === 'scheduling priority set' && l.nice === -10), 1);
      const kids = childrenOf(d.proc.pid!);
      assert.equal(niceness(d.proc.pid!), -10);
      if (backend === 'ipset') {
        assert.deepEqual(kids.filter((k) => k.cmd.includes('ipset -exist -')).map((k) => k.nice), [-10], 'the ipset shell');
        // The loader of big batches, kept running once the start's load started it.
        assert.deepEqual(kids.filter((k) => k.cmd.includes('ampere-ipset-load --serve')).map((k) => k.nice), [-10], 'the ipset loader');
      }
      assert.deepEqual(kids.filter((k) => k.cmd.includes('ampere-conntrack')).map((k) => k.nice), [0], 'the conntrack helper');
      for (const fam of [4, 6] as const) {
        const input = await ipt(fam, '-S', 'INPUT');
        assert.equal(input.split('\n').filter((l) => l.includes('-j ampere')).length, 1, `one jump (v${fam})`);
        const chain = (await ipt(fam, '-S', 'ampere')).trim().split('\n');
        assert.equal(chain.at(-1), '-A ampere -j RETURN');
      }
      await failures(atk.v4[0], 2);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await kernelBans(4), [], 'two failures: not yet');
      await failures(atk.v4[0], 1);
      await failures(atk.v6[0], 3);
      await failures(atk.v4[1], 10); // allow-listed: never
      await failures(atk.v6[1], 10);
      await ami.send(amiEvent('InvalidPassword', '127.0.0.1', { Service: 'AMI' }).repeat(10));
      await d.waitFor((l) => l.msg === 'ban' && l.address === atk.v4[0]);
      await d.waitFor((l) => l.msg === 'ban' && l.address === atk.v6[0]);
      await eventually('both bans in the kernel', async () => (await kernelBans(4)).length === 1 && (await kernelBans(6)).length === 1);
      assert.deepEqual(await kernelBans(4), [atk.v4[0]]);
      assert.deepEqual(await kernelBans(6), [atk.v6[0]]);
      if (backend === 'ipset') {
        const chain = (await ipt(4, '-S', 'ampere')).trim().split('\n');
        assert.deepEqual(chain, ['-N ampere', '-A ampere -m set --match-set ampere-n4 src -j DROP', '-A ampere -m set --match-set ampere-v4 src -j DROP', '-A ampere -j RETURN']);
      } else {
        const chain = (await ipt(4, '-S', 'ampere')).trim().split('\n');
        assert.deepEqual(chain, ['-N ampere', `-A ampere -s ${atk.v4[0]}/32 -j DROP`, '-A ampere -j RETURN']);
      }
      assert.equal(await sink.reaches(atk.ns, atk.v4[0], atk.hostV4), false, 'banned v4 dropped');
      assert.equal(await sink.reaches(atk.ns, atk.v6[0], atk.hostV6), false, 'banned v6 dropped');
      assert.equal(await sink.passes(atk.ns, atk.v4[1], atk.hostV4), true, 'allowed v4 passes');
      assert.equal(await sink.passes(atk.ns, atk.v6[1], atk.hostV6), true, 'allowed v6 passes');
      assert.equal(d.count((l) => l.msg === 'ban'), 2, 'nothing else banned (allow list, loopback)');
    });

    test('SIGKILL right after a ban loses nothing; a restart after a firewall wipe restores every ban', async () => {
      const d1 = lab.daemons[0];
      await failures('192.0.2.99', 3);
      await d1.waitFor((l) => l.msg === 'ban' && l.address === '192.0.2.99');
      const loaders = childrenOf(d1.proc.pid!).filter((k) => k.cmd.includes('ampere-ipset-load --serve'));
      assert.equal(loaders.length, backend === 'ipset' ? 1 : 0);
      d1.proc.kill('SIGKILL');
      await d1.exit;
      // The loader kept running reads its input from the daemon: it ends with it, no orphan stays.
      const ended = (pid: number) => { try { return / Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return true; } };
      for (const l of loaders) await eventually('the loader gone with its daemon', () => ended(l.pid));
      // A reboot or firewall reload: the kernel forgets everything Ampere made.
      for (const fam of [4, 6] as const) { await ipt(fam, '-F', 'ampere'); await ipt(fam, '-D', 'INPUT', '-j', 'ampere'); await ipt(fam, '-X', 'ampere'); }
      if (backend === 'ipset') for (const s of ['ampere-v4', 'ampere-v6']) await pbx.must('ipset', ['destroy', s]);
      const d2 = startDaemon();
      const started = await d2.waitFor((l) => l.msg === 'ampere started', 15_000);
      assert.equal(started.bansRestored, 3);
      assert.equal(typeof started.restoreMs, 'number');
      assert.deepEqual(await kernelBans(4), ['192.0.2.99', atk.v4[0]].sort());
      assert.deepEqual(await kernelBans(6), [atk.v6[0]]);
      assert.equal(await sink.reaches(atk.ns, atk.v4[0], atk.hostV4), false);
      assert.equal(await sink.reaches(atk.ns, atk.v6[0], atk.hostV6), false);
      for (const fam of [4, 6] as const) {
        assert.equal((await ipt(fam, '-S', 'INPUT')).split('\n').filter((l) => l.includes('-j ampere')).length, 1);
      }
      // A plain restart (SIGTERM) leaves the bans in the kernel while the daemon is away.
      assert.equal(await d2.stop(), 0);
      assert.deepEqual(await kernelBans(4), ['192.0.2.99', atk.v4[0]].sort());
      assert.equal(await sink.reaches(atk.ns, atk.v4[0], atk.hostV4), false, 'still dropped while the daemon is down');
      // Allowed while the daemon was down: lifted at the start, gone from the kernel with the load.
      const d3 = startDaemon({ AMPERE_ALLOW: `${atk.v4[1]},${atk.v6[1]},${atk.v4[0]}` });
      const restarted = await d3.waitFor((l) => l.msg === 'ampere started', 15_000);
      assert.deepEqual([restarted.bansRestored, restarted.bansLiftedAllowed], [2, 1]);
      assert.equal(d3.count((l) => l.msg === 'stored ban lifted: address is allowed now' && l.address === atk.v4[0]), 1);
      assert.equal(d3.count((l) => l.msg === 'bans restored' && l.bans === 2 && l.inSync === true), 1);
      assert.deepEqual(await kernelBans(4), ['192.0.2.99']);
      assert.equal(await sink.passes(atk.ns, atk.v4[0], atk.hostV4), true, 'the allowed address passes');
      assert.equal(await d3.stop(), 0);
    });

    test('a reload to target = REJECT rewrites Ampere\'s rules in one load, and back: bans kept, no drift taken for it', async () => {
      const cfgFile = join(dir, `target-${backend}.cfg`);
      writeFileSync(cfgFile, 'target = DROP\n');
      const d = startDaemon({ AMPERE_CONFIG: cfgFile });
      await d.waitFor((l) => l.msg === 'ami connected', 15_000);
      await failures(atk.v4[0], 3);
      await d.waitFor((l) => l.msg === 'ban' && l.address === atk.v4[0]);
      await eventually('the ban in the kernel', async () => (await kernelBans(4)).includes(atk.v4[0]));
      const before = await kernelBans(4);
      assert.deepEqual(before, ['192.0.2.99', atk.v4[0]].sort(), 'the stored ban and the new one');
      const targets = async (fam: 4 | 6) => (await ipt(fam, '-S', 'ampere')).split('\n').filter((l) => / -j (DROP|REJECT)/.test(l)).map((l) => /-j (\w+)/.exec(l)![1]);
      for (const [target, reloads] of [['REJECT', 1], ['DROP', 2]] as const) {
        writeFileSync(cfgFile, `target = ${target}\n`);
        d.proc.kill('SIGHUP');
        const line = await d.waitFor((l) => l.msg === 'configuration reloaded', 15_000, reloads);
        assert.deepEqual(line.applied, ['target']);
        for (const fam of [4, 6] as const) {
          const t = await targets(fam);
          assert.ok(t.length > 0 && t.every((x) => x === target), `v${fam}: every rule of the chain has -j ${target} (${t.join(', ')})`);
        }
        assert.deepEqual(await kernelBans(4), before, 'the same bans');
        assert.equal(await sink.reaches(atk.ns, atk.v4[0], atk.hostV4), false, `banned, ${target}`);
        assert.equal(await sink.passes(atk.ns, atk.v4[1], atk.hostV4), true, 'allowed passes');
      }
      // The reconciler checks twice per verify_interval (2s): two intervals give it four looks
      // at the rewritten chain, none of which may call Ampere's own reload drift.
      await new Promise((r) => setTimeout(r, 4_000));
      assert.equal(d.count((l) => /^firewall drift/.test(String(l.msg))), 0, 'no drift logged');
      assert.equal(await d.stop(), 0);
    });

    test('a reload of set_size swaps in sets of the new maxelem with every ban, and back; no drift taken for it', { skip: backend !== 'ipset' }, async () => {
      const cfgFile = join(dir, 'set-size.cfg');
      writeFileSync(cfgFile, '');
      const d = startDaemon({ AMPERE_CONFIG: cfgFile });
      await d.waitFor((l) => l.msg === 'ami connected', 15_000);
      if (!(await kernelBans(6)).includes(atk.v6[0])) {
        await failures(atk.v6[0], 3);
        await eventually('the ban in the kernel', async () => (await kernelBans(6)).includes(atk.v6[0]));
      }
      const before = [...(await kernelBans(4)), ...(await kernelBans(6))];
      const maxelem = async (fam: 4 | 6) => Number(/maxelem (\d+)/.exec(await pbx.must('ipset', ['list', '-t', `ampere-v${fam}`]))![1]);
      assert.deepEqual([await maxelem(4), await maxelem(6)], [1_048_576, 1_048_576]);
      for (const [size, reloads] of [[65_536, 1], [1_048_576, 2]] as const) {
        writeFileSync(cfgFile, size === 1_048_576 ? '' : `set_size = ${size}\n`);
        d.proc.kill('SIGHUP');
        const line = await d.waitFor((l) => l.msg === 'configuration reloaded', 15_000, reloads);
        assert.deepEqual([line.applied, line.needsRestart], [['set_size'], []]);
        assert.deepEqual([await maxelem(4), await maxelem(6)], [size, size], 'the live sets have the new maxelem');
        assert.deepEqual([...(await kernelBans(4)), ...(await kernelBans(6))], before, 'and every ban');
        assert.equal(await sink.reaches(atk.ns, atk.v6[0], atk.hostV6), false, 'still dropped');
      }
      await new Promise((r) => setTimeout(r, 4_000));
      assert.equal(d.count((l) => /^firewall drift/.test(String(l.msg))), 0, 'no drift logged');
      assert.equal(d.count((l) => / is full at /.test(String(l.msg))), 0);
      assert.equal(await d.stop(), 0);
    });

    test('ports = 5060: banned hosts lose that port (TCP and UDP jumps), keep the others; a deleted jump is repaired; a restart without ports jumps for all', async () => {
      const other = await UdpSink.start(pbx, 5070);
      const jumps = async (fam: 4 | 6) => (await ipt(fam, '-S', 'INPUT')).split('\n').filter((l) => l.endsWith('-j ampere')).sort();
      const portJumps = ['-A INPUT -p tcp -m multiport --dports 5060 -j ampere', '-A INPUT -p udp -m multiport --dports 5060 -j ampere'];
      const d = startDaemon({ AMPERE_PORTS: '5060' });
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      assert.equal(d.count((l) => l.msg === 'jump to ampere made for the configured ports'), 2, 'the plain jump replaced, per family');
      for (const fam of [4, 6] as const) assert.deepEqual(await jumps(fam), portJumps, `v${fam}`);
      for (const [from, to] of [[atk.v4[0], atk.hostV4], [atk.v6[0], atk.hostV6]]) {
        assert.deepEqual(await kernelBans(from.includes(':') ? 6 : 4).then((b) => b.includes(from)), true, `${from} banned`);
        assert.equal(await sink.reaches(atk.ns, from, to), false, `${from} dropped at 5060`);
        assert.equal(await other.passes(atk.ns, from, to), true, `${from} still reaches 5070`);
      }
      // Someone deletes the UDP jump: drift, repaired by the reconciler.
      await ipt(4, '-D', 'INPUT', '-p', 'udp', '-m', 'multiport', '--dports', '5060', '-j', 'ampere');
      const fixed = await d.waitFor((l) => /^firewall drift: jump missing from INPUT \(v4\); repaired/.test(String(l.msg)), 10_000);
      assert.ok(fixed);
      assert.deepEqual(await jumps(4), portJumps);
      assert.equal(await sink.reaches(atk.ns, atk.v4[0], atk.hostV4), false, 'dropped again');
      assert.equal(await d.stop(), 0);
      // Without ports: one plain jump again, and the other port is closed to banned hosts too.
      const d2 = startDaemon();
      await d2.waitFor((l) => l.msg === 'ampere started', 15_000);
      for (const fam of [4, 6] as const) assert.deepEqual(await jumps(fam), ['-A INPUT -j ampere'], `v${fam}`);
      assert.equal(await other.reaches(atk.ns, atk.v4[0], atk.hostV4), false, 'dropped at 5070 now');
      assert.equal(await d2.stop(), 0);
    });

    test('a ban expires: it leaves the kernel and the database agrees', async () => {
      const d = startDaemon({ AMPERE_BANTIME: '2s', AMPERE_BANTIME_MAX: '2s' });
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      await d.waitFor((l) => l.msg === 'ami connected', 15_000); // logged in: the events below reach it
      const target = backend === 'ipset' ? '192.0.2.150' : '192.0.2.151';
      await failures(target, 3);
      await d.waitFor((l) => l.msg === 'ban' && l.address === target);
      await eventually('ban in the kernel', async () => (await kernelBans(4)).includes(target));
      await d.waitFor((l) => l.msg === 'unban' && l.address === target, 6_000);
      await eventually('gone from the kernel', async () => !(await kernelBans(4)).includes(target));
      await d.stop();
      const db = new Database(join(dir, 'ampere.db'), { readonly: true });
      const row = db.prepare('SELECT lifted_at, lift_reason FROM bans WHERE address = ? ORDER BY id DESC').get(target) as { lifted_at: number; lift_reason: string };
      const host = db.prepare('SELECT banned FROM hosts WHERE address = ?').get(target) as { banned: number };
      db.close();
      assert.equal(row.lift_reason, 'expired');
      assert.equal(host.banned, 0);
    });

    test('ipv6 = off (a kernel without IPv6): IPv4 bans enforced, an IPv6 ban stored but kept out of the kernel', async () => {
      const v6Before = await kernelBans(6);
      const d = startDaemon({ AMPERE_IPV6: 'off' });
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      await d.waitFor((l) => l.msg === 'ami connected', 15_000);
      assert.equal(d.count((l) => String(l.msg).startsWith('IPv6 is off: IPv4 only') && l.reason === 'ipv6 = off'), 1);
      const [a4, a6] = backend === 'ipset' ? ['192.0.2.177', '2001:db8:77::1'] : ['192.0.2.178', '2001:db8:77::2'];
      await failures(a6, 3);
      await failures(a4, 3);
      await d.waitFor((l) => l.msg === 'ban' && l.address === a6);
      await d.waitFor((l) => l.msg === 'ban' && l.address === a4);
      await eventually('the IPv4 ban in the kernel', async () => (await kernelBans(4)).includes(a4));
      assert.deepEqual(await kernelBans(6), v6Before, 'the IPv6 chain and set (made by earlier runs) untouched');
      // Once, for the first IPv6 ban left out: with rules that is a stored one the start's load met.
      assert.equal(d.count((l) => String(l.msg).startsWith('IPv6 is off: IPv6 bans are stored')), 1);
      assert.equal(d.count((l) => l.level >= 50), 0, 'no error: no ip6tables or IPv6 ipset command was tried');
      await d.stop();
      const db = new Database(join(dir, 'ampere.db'), { readonly: true });
      const row = db.prepare('SELECT lifted_at FROM bans WHERE address = ? ORDER BY id DESC').get(a6) as { lifted_at: number | null };
      db.close();
      assert.equal(row.lifted_at, null, 'the IPv6 ban is active in the database (enforced once IPv6 is on again)');
    });

    test('no address that cannot be one host is banned; one stored anyway is left out of the load (in sync), and unban lifts it', async () => {
      // Rows written straight into SQLite, past every check (an older Ampere, a hand edit).
      const bad: [string, 4 | 6][] = [['0.0.0.0', 4], ['::', 6], ['224.0.0.1', 4], ['::0', 6]];
      const db = new Database(join(dir, 'ampere.db'));
      for (const [a, f] of bad) {
        db.prepare(`INSERT INTO hosts (address, family, first_seen, last_seen, ban_count, banned) VALUES (?, ?, 0, 0, 1, 1) ON CONFLICT DO NOTHING`).run(a, f);
        db.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind) VALUES (?, ?, 0, NULL, 'auto')`).run(a, f);
      }
      const now = Date.now();
      const good = (db.prepare(`SELECT address FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > ?)`).all(now + 60_000) as { address: string }[])
        .map((r) => r.address).filter((a) => !bad.some(([b]) => b === a));
      db.close();
      // The kernel forgets Ampere's state (a reboot): only the full load can bring the bans back.
      for (const fam of [4, 6] as const) { await ipt(fam, '-F', 'ampere'); await ipt(fam, '-D', 'INPUT', '-j', 'ampere'); await ipt(fam, '-X', 'ampere'); }
      if (backend === 'ipset') for (const set of ['ampere-v4', 'ampere-v6']) await pbx.must('ipset', ['destroy', set]);
      const d = startDaemon();
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      await d.waitFor((l) => l.msg === 'ami connected', 15_000);
      assert.equal(d.count((l) => l.msg === 'bans restored' && l.inSync === true), 1, 'the load succeeded');
      assert.equal(d.count((l) => /^firewall .* failed$/.test(String(l.msg))), 0);
      assert.deepEqual(d.lines.filter((l) => l.msg === 'full load: stored ban left out, its address may not be banned').map((l) => l.address).sort(), bad.map(([a]) => a).sort());
      const held = [...(await kernelBans(4)), ...(await kernelBans(6))];
      for (const a of good) assert.ok(held.includes(a), `${a} (a good stored ban) is in the kernel`);
      for (const [a] of bad) assert.ok(!held.includes(a), `${a} is not`);
      // Events from such sources never lead to a ban; the events around them still count.
      const notHosts = ['0.0.0.0', '::', '224.0.0.1', '239.255.255.250', '255.255.255.255', '240.0.0.1', 'ff02::1'];
      for (const a of notHosts) await failures(a, 5);
      await ami.send(amiEvent('ChallengeResponseFailed', '192.0.2.7', { RemoteAddress: 'IPV4/UDP/2001:db8::66/5060' }).repeat(5));
      await ami.send(amiEvent('ChallengeResponseFailed', '2001:db8::7', { RemoteAddress: 'IPV6/UDP/192.0.2.66/5060' }).repeat(5));
      // A dual-stack socket's view of an IPv4 peer: banned as IPv4, where its packets arrive.
      const mapped = backend === 'ipset' ? '192.0.2.201' : '192.0.2.202';
      await ami.send(amiEvent('ChallengeResponseFailed', '2001:db8::9', { RemoteAddress: `IPV6/UDP/::ffff:${mapped}/5060` }).repeat(3));
      await d.waitFor((l) => l.msg === 'ban' && l.address === mapped);
      await eventually('the mapped address banned as IPv4', async () => (await kernelBans(4)).includes(mapped));
      assert.deepEqual(d.lines.filter((l) => l.msg === 'ban').map((l) => l.address), [mapped], 'nothing else banned');
      assert.equal(d.count((l) => /^firewall .* failed$/.test(String(l.msg))), 0);
      // ampere unban lifts every one of them by its stored text.
      const env = { AMPERE_DB: join(dir, 'ampere.db') };
      for (const [a] of bad) {
        const r = await ampere(['unban', a], env, { netns: pbx.name });
        assert.equal(r.code, 0, `unban ${a}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /^unbanned /);
      }
      await d.stop();
      const after = new Database(join(dir, 'ampere.db'), { readonly: true });
      const left = after.prepare(`SELECT count(*) AS n FROM bans WHERE lifted_at IS NULL AND address IN ('0.0.0.0', '::', '224.0.0.1', '::0')`).get() as { n: number };
      after.close();
      assert.equal(left.n, 0);
    });
  });
}
