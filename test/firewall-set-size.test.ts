/**
 * set_size: the most bans each ipset host set holds (its maxelem). Real ipset in a namespace
 * each test makes and removes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../src/log';
import { createBackend, type KernelBan } from '../src/firewall';
import { withNetns, skipUnlessRoot, type Netns } from '../tools/lab/netns';

const skip = skipUnlessRoot();
const CHAIN = 'ampere';
const log = createLogger('silent');
const host4 = (i: number): KernelBan => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, family: 4, until: null });
const maxelem = async (ns: Netns, set: string) => Number(/maxelem (\d+)/.exec(await ns.must('ipset', ['list', '-t', set]))?.[1]);
const members = async (ns: Netns, set: string) => Number(/Number of entries: (\d+)/.exec(await ns.must('ipset', ['list', '-t', set]))?.[1]);

test('the host sets are made with set_size as maxelem, the range sets keep theirs; a new set_size takes over at the next full load with every ban', { skip }, () =>
  withNetns(async (ns) => {
    const big = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name, setSize: 2_000_000 }, log);
    await big.init();
    assert.equal(await maxelem(ns, `${CHAIN}-v4`), 2_000_000);
    assert.equal(await maxelem(ns, `${CHAIN}-v6`), 2_000_000);
    assert.equal(await maxelem(ns, `${CHAIN}-n4`), 65_536);
    const bans = [...Array.from({ length: 300 }, (_, i) => host4(i)), { address: '2001:db8::7', family: 6 as const, until: null }, { address: '203.0.113.0/24', family: 4 as const, until: null }];
    await big.setAll(bans, Date.now());
    // The daemon restarted with a smaller set_size: init leaves the live sets (rules use them), the load swaps in new ones.
    const small = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name, setSize: 65_536 }, log);
    await small.init();
    await small.setAll(bans, Date.now());
    assert.equal(await maxelem(ns, `${CHAIN}-v4`), 65_536);
    assert.equal(await maxelem(ns, `${CHAIN}-v6`), 65_536);
    assert.equal(await members(ns, `${CHAIN}-v4`), 300);
    assert.equal(await members(ns, `${CHAIN}-v6`), 1);
    assert.equal(await members(ns, `${CHAIN}-n4`), 1);
  }));

test('a full set says so and names set_size, for a full load and for more bans', { skip }, () =>
  withNetns(async (ns) => {
    const fw = await createBackend('ipset', { chain: CHAIN, target: 'DROP', iptables: 'nft', netns: ns.name, setSize: 65_536 }, log);
    await fw.init();
    const tooMany = Array.from({ length: 70_000 }, (_, i) => host4(i));
    await assert.rejects(fw.setAll(tooMany, Date.now()), /a ban set is full: more bans than set_size \(65536\) allows .*Hash is full/);
    // What fits loads; more bans are refused with the same message. The kernel counts a set's
    // elements per region of the hash, so its limit is approximate: a few may pass it.
    await fw.setAll(tooMany.slice(0, 65_536), Date.now());
    assert.equal(await members(ns, `${CHAIN}-v4`), 65_536);
    await assert.rejects(fw.add(tooMany.slice(65_536, 66_536), Date.now()), /a ban set is full: more bans than set_size \(65536\)/);
    assert.ok(await members(ns, `${CHAIN}-v4`) < 65_636);
  }));
