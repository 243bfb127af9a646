import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ampere, json } from './helpers/cli';
import { skipUnlessRoot, type Attacker, type Netns, type UdpSink } from '../tools/lab/netns';
import { PbxLab } from '../tools/lab/pbx-lab';
import { eventually } from './helpers/eventually';

/**
 * Range bans (`ampere ban 198.51.100.0/24`) against the real daemon and kernel in namespaces:
 * the attacker also sends from two addresses of 198.51.100.0/24 and one of 203.0.113.0/24,
 * routed to the PBX over its veth (networks the PBX host does not have itself).
 */
const skip = skipUnlessRoot();

/** The namespace's one interface besides lo. */
async function veth(ns: Netns): Promise<string> {
  const out = await ns.must('ip', ['-o', 'link', 'show']);
  return out.split('\n').map((l) => /^\d+: ([^@:]+)/.exec(l)?.[1]).filter((n): n is string => !!n && n !== 'lo')[0];
}

for (const backend of ['ipset', 'rules'] as const) {
  describe(`range bans, ${backend} backend, in a namespace`, { skip }, () => {
    let lab: PbxLab;
    let pbx: Netns;
    let atk: Attacker;
    let sink: UdpSink;
    const [in1, in2, out1] = ['198.51.100.7', '198.51.100.200', '203.0.113.9'];
    const [in6, out6] = ['2001:db8:77::5', '2001:db8:78::5'];
    const env = () => lab.env(backend, { AMPERE_ALLOW: '192.0.2.77' });
    const cli = (args: string[]) => ampere(args, env(), { netns: pbx.name });

    before(async () => {
      lab = await PbxLab.create(`ranges-${backend}`);
      ({ pbx, atk, sink } = lab);
      const [a, h] = [await veth(atk.ns), await veth(pbx)];
      for (const x of [in1, in2, out1]) await atk.ns.must('ip', ['addr', 'add', `${x}/32`, 'dev', a]);
      for (const x of [in6, out6]) await atk.ns.must('ip', ['addr', 'add', `${x}/128`, 'dev', a, 'nodad']);
      for (const n of ['198.51.100.0/24', '203.0.113.0/24', '2001:db8:77::/48', '2001:db8:78::/48']) await pbx.must('ip', ['route', 'add', n, 'dev', h]);
    });
    // A test that fails half-way leaves no daemon holding the database lock for the next one.
    afterEach(async () => { await Promise.all(lab.daemons.map((d) => d.stop('SIGKILL'))); });
    after(() => lab?.destroy());

    test('a /24 and a /48 are dropped whole and nothing beside them; stored with source range; a restart after a wipe restores them; unban lifts them', async () => {
      for (const x of [in1, in2, out1]) assert.equal(await sink.passes(atk.ns, x, atk.hostV4), true, `${x} reaches before any ban`);
      const d = lab.daemon(env());
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      const ban = await cli(['ban', '198.51.100.0/24', '--for', '2h', '--reason', 'scanner farm']);
      assert.equal(ban.code, 0, ban.stderr);
      const ban6 = await cli(['ban', '2001:db8:77::/48', '--json']);
      assert.equal(ban6.code, 0, ban6.stderr);
      assert.equal((json(ban6) as { address: string }).address, '2001:db8:77::/48');
      for (const x of [in1, in2]) assert.equal(await sink.reaches(atk.ns, x, atk.hostV4), false, `${x} inside the range: dropped`);
      assert.equal(await sink.passes(atk.ns, out1, atk.hostV4), true, `${out1} outside: passes`);
      assert.equal(await sink.reaches(atk.ns, in6, atk.hostV6), false, `${in6} inside the /48: dropped`);
      assert.equal(await sink.passes(atk.ns, out6, atk.hostV6), true, `${out6} outside: passes`);
      const bans = json(await cli(['bans', '--source', 'range', '--json'])) as { address: string; source: string }[];
      assert.deepEqual(bans.map((b) => [b.address, b.source]).sort(), [['198.51.100.0/24', 'range'], ['2001:db8:77::/48', 'range']]);
      // The reconciler counts the ranges with the hosts: no drift for them.
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal(d.count((l) => /^firewall drift/.test(String(l.msg))), 0);
      d.proc.kill('SIGKILL');
      await d.exit;
      // A reboot: the kernel forgets everything; the start loads the ranges from the database.
      for (const ipt of ['iptables', 'ip6tables']) { await pbx.must(ipt, ['-w', '-F', 'ampere']); await pbx.must(ipt, ['-w', '-D', 'INPUT', '-j', 'ampere']); await pbx.must(ipt, ['-w', '-X', 'ampere']); }
      if (backend === 'ipset') for (const s of ['ampere-v4', 'ampere-v6', 'ampere-n4', 'ampere-n6']) await pbx.must('ipset', ['destroy', s]);
      const d2 = lab.daemon(env());
      const started = await d2.waitFor((l) => l.msg === 'ampere started', 15_000);
      assert.equal(started.bansRestored, 2);
      assert.equal(await sink.reaches(atk.ns, in2, atk.hostV4), false, 'dropped again after the restart');
      assert.equal(await sink.reaches(atk.ns, in6, atk.hostV6), false);
      const un = await cli(['unban', '198.51.100.0/24']);
      assert.equal(un.code, 0, un.stderr);
      await eventually('the range passes again', () => sink.reaches(atk.ns, in1, atk.hostV4));
      assert.equal(await sink.reaches(atk.ns, in6, atk.hostV6), false, 'the /48 still dropped');
      assert.equal(await d2.stop(), 0);
      const db = new Database(lab.db, { readonly: true });
      const rows = db.prepare(`SELECT address, source, reason_kind, lift_reason FROM bans WHERE source = 'range' ORDER BY id`).all();
      db.close();
      assert.deepEqual(rows, [
        { address: '198.51.100.0/24', source: 'range', reason_kind: 'scanner farm', lift_reason: 'unban' },
        { address: '2001:db8:77::/48', source: 'range', reason_kind: 'manual', lift_reason: null },
      ]);
    });

    test('a range banned for 2 s ends by itself: dropped, then passes again, the row expired', async () => {
      const d = lab.daemon(env());
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      const r = await cli(['ban', '203.0.113.0/24', '--for', '2s']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await sink.reaches(atk.ns, out1, atk.hostV4), false, 'dropped while banned');
      await d.waitFor((l) => l.msg === 'unban' && l.address === '203.0.113.0/24' && l.reason === 'expired', 10_000);
      await eventually('passes once it ended', () => sink.reaches(atk.ns, out1, atk.hostV4));
      assert.equal(await d.stop(), 0);
    });

    test('refused: not a network, too wide, over the allow list, over loopback, over this host\'s own network', async () => {
      const d = lab.daemon(env());
      await d.waitFor((l) => l.msg === 'ampere started', 15_000);
      const cases: [string, number, RegExp][] = [
        ['198.51.100.7/24', 2, /not a network address: the network is 198\.51\.100\.0\/24/],
        ['10.0.0.0/7', 2, /wider than \/8/],
        ['192.0.2.0/24', 1, /covers 192\.0\.2\.77, which is on the allow list \(config\)/],
        ['127.0.0.0/8', 1, /covers 127\.0\.0\.0\/8, which is on the allow list/],
        [`${atk.hostV4.split('.').slice(0, 3).join('.')}.0/24`, 1, /covers this host's own network/],
      ];
      for (const [range, code, why] of cases) {
        const r = await cli(['ban', range]);
        assert.equal(r.code, code, `${range}: ${r.stderr}`);
        assert.match(r.stderr, why, range);
      }
      assert.equal(d.count((l) => l.msg === 'ban'), 0, 'nothing banned');
      assert.equal(await d.stop(), 0);
    });
  });
}
