import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SecurityEvent } from '../src/events';
import { AllowList } from '../src/allow';
import { PenaltyTable, banDuration, type ScoringOptions } from '../src/scoring';
import { fixtureEvents, fixtureNames } from './helpers/fixtures';

const MIN = 60_000;
const ev = (kind: string, address = '192.0.2.10', severity?: 'Error' | 'Informational', service = 'PJSIP'): SecurityEvent => ({
  kind, address, family: address.includes(':') ? 6 : 4, service, account: '100', sessionId: '', transport: 'UDP', port: 5060,
  severity: severity ?? (kind === 'ChallengeSent' || kind === 'SuccessfulAuth' ? 'Informational' : 'Error'),
});
const table = (o: Partial<ScoringOptions> = {}) => new PenaltyTable({ loyalty: 3, findtimeMs: 10 * MIN, maxHosts: 100_000, ...o });

/** Deterministic PRNG so a failing property can be replayed. */
function rng(seed: number) {
  return () => { seed = (seed * 1664525 + 1013904223) >>> 0; return seed / 2 ** 32; };
}

test('the loyalty-th failure within findtime bans, for every loyalty 1..12 and every failure kind', () => {
  const kinds = ['ChallengeResponseFailed', 'InvalidPassword', 'InvalidAccountID', 'FailedACL', 'RequestNotAllowed', 'RequestBadFormat', 'RequestNotSupported', 'SessionLimit', 'MemoryLimit'];
  for (let loyalty = 1; loyalty <= 12; loyalty++) {
    for (const kind of kinds) {
      const t = table({ loyalty });
      for (let i = 1; i <= loyalty; i++) {
        const v = t.observe(ev(kind), i * 1000);
        assert.equal(v.action, i === loyalty ? 'ban' : 'none', `loyalty ${loyalty} ${kind} failure ${i}`);
        if (v.action === 'ban') assert.equal(v.failures, loyalty);
      }
      assert.equal(t.size, 0, 'a banned host leaves the table');
    }
  }
});

test('mixed kinds and services add up', () => {
  const t = table();
  assert.equal(t.observe(ev('InvalidAccountID'), 1).action, 'none');
  assert.equal(t.observe(ev('FailedACL', undefined, undefined, 'SIP'), 2).action, 'none');
  assert.equal(t.observe(ev('ChallengeResponseFailed', undefined, undefined, 'AMI'), 3).action, 'ban');
});

test('unanswered challenges ban only after 5 x loyalty, never before', () => {
  for (let loyalty = 1; loyalty <= 6; loyalty++) {
    const t = table({ loyalty });
    for (let i = 1; i <= 5 * loyalty; i++) assert.equal(t.observe(ev('ChallengeSent'), i).action, i === 5 * loyalty ? 'ban' : 'none');
  }
  // Challenges never lower the failure count needed: loyalty-1 failures plus many (< 5 x loyalty) challenges do not ban.
  const t = table();
  t.observe(ev('ChallengeResponseFailed'), 1);
  t.observe(ev('ChallengeResponseFailed'), 2);
  for (let i = 0; i < 14; i++) assert.equal(t.observe(ev('ChallengeSent'), 3 + i).action, 'none');
});

test('a phone that registers correctly and mistypes now and then is never banned', () => {
  const t = table();
  const random = rng(42);
  let now = 0;
  for (let round = 0; round < 5000; round++) {
    now += 60_000; // a registration a minute
    const mistakes = Math.floor(random() * 3); // 0..2 = up to loyalty-1
    for (let i = 0; i < mistakes; i++) {
      assert.equal(t.observe(ev('ChallengeSent'), (now += 100)).action, 'none');
      assert.equal(t.observe(ev('ChallengeResponseFailed'), (now += 100)).action, 'none');
    }
    assert.equal(t.observe(ev('ChallengeSent'), (now += 100)).action, 'none');
    assert.notEqual(t.observe(ev('SuccessfulAuth'), (now += 100)).action, 'ban');
    assert.equal(t.failures('192.0.2.10', now), 0, 'a success clears the penalty');
  }
  assert.ok(t.size <= 1);
  t.prune(now + 10 * MIN);
  assert.equal(t.size, 0, 'the cleared failures leave with the window');
});

test('an office NAT: many phones succeed, one mistypes its password between them, never banned', () => {
  for (const loyalty of [1, 2, 3, 5]) {
    const t = table({ loyalty });
    let now = 0;
    for (let minute = 0; minute < 24 * 60; minute++) {
      now = minute * MIN;
      // 20 phones re-register each minute (challenge then success), the broken one fails loyalty-1 times
      // (at loyalty 1 a single failure between successes bans, as it always has: that case is not a NAT's).
      for (let phone = 0; phone < 20; phone++) {
        assert.equal(t.observe({ ...ev('ChallengeSent'), account: `2${phone}` }, (now += 10)).action, 'none');
        if (phone === 7) {
          for (let k = 0; k < loyalty - 1; k++) assert.equal(t.observe(ev('ChallengeResponseFailed'), (now += 10)).action, 'none', `loyalty ${loyalty} minute ${minute}`);
        }
        assert.notEqual(t.observe({ ...ev('SuccessfulAuth'), account: `2${phone}` }, (now += 10)).action, 'ban');
        assert.equal(t.failures('192.0.2.10', now), 0);
      }
    }
  }
});

test('one valid credential does not buy unlimited guesses: 10 x loyalty failures within findtime ban across successes', () => {
  for (let loyalty = 1; loyalty <= 6; loyalty++) {
    for (const every of [1, 2, 3]) {
      if (every >= loyalty && loyalty > 1) continue; // every loyalty-th failure would ban by loyalty alone
      const t = table({ loyalty });
      const wrong = { ...ev('ChallengeResponseFailed'), account: '100' };
      const right = { ...ev('SuccessfulAuth'), account: '199' };
      let now = 0;
      let bannedAt = 0;
      for (let i = 1; i <= 100 && !bannedAt; i++) {
        const v = t.observe(wrong, (now += 100));
        if (v.action === 'ban') { bannedAt = i; assert.equal(v.failures, i, 'the ban counts every failure in the window'); }
        else if (i % every === 0) t.observe(right, (now += 100));
      }
      assert.equal(bannedAt, loyalty === 1 ? 1 : 10 * loyalty, `loyalty ${loyalty}, a success after every ${every} failure(s)`);
    }
  }
  // The 100 wrong passwords of the issue, each followed by a success for another account: the
  // 30th bans (the daemon drops a banned host's events, so the rest never reach the table).
  const t = table();
  let guesses = 0;
  for (let i = 0; i < 100; i++) {
    guesses++;
    if (t.observe({ ...ev('ChallengeResponseFailed'), account: '100' }, i * 1000).action === 'ban') break;
    t.observe({ ...ev('SuccessfulAuth'), account: '199' }, i * 1000 + 500);
  }
  assert.equal(guesses, 30);
});

test('the bound across successes slides with findtime, and its own successFactor', () => {
  // 29 failures per window with successes between never ban (loyalty 3: the bound is 30)...
  const t = table({ findtimeMs: 10 * MIN });
  let now = 0;
  for (let i = 0; i < 3000; i++) {
    now += Math.ceil((10 * MIN) / 29) + 1;
    assert.equal(t.observe(ev('InvalidPassword'), now).action, 'none', `failure ${i}`);
    assert.equal(t.observe(ev('SuccessfulAuth'), now + 1).action, 'cleared');
  }
  // ...and a smaller factor bans sooner.
  const strict = table({ successFactor: 2 });
  for (let i = 1; i <= 6; i++) {
    assert.equal(strict.observe(ev('InvalidPassword'), i * 10).action, i === 6 ? 'ban' : 'none');
    if (i < 6) strict.observe(ev('SuccessfulAuth'), i * 10 + 1);
  }
  // A success clears the challenges too: 14 challenges, a success, 14 more do not ban.
  const ch = table();
  for (let i = 0; i < 14; i++) ch.observe(ev('ChallengeSent'), i);
  ch.observe(ev('ChallengeResponseFailed'), 20);
  ch.observe(ev('SuccessfulAuth'), 21);
  for (let i = 0; i < 14; i++) assert.equal(ch.observe(ev('ChallengeSent'), 30 + i).action, 'none');
});

test('failures older than findtime no longer count (sliding window)', () => {
  const t = table({ loyalty: 3, findtimeMs: 10 * MIN });
  assert.equal(t.observe(ev('ChallengeResponseFailed'), 0).action, 'none');
  assert.equal(t.observe(ev('ChallengeResponseFailed'), 9 * MIN).action, 'none');
  // The first has left the window at 10 min + 1 ms: only 2 count.
  assert.equal(t.observe(ev('ChallengeResponseFailed'), 10 * MIN + 1).action, 'none');
  assert.equal(t.failures('192.0.2.10', 10 * MIN + 1), 2);
  assert.equal(t.observe(ev('ChallengeResponseFailed'), 11 * MIN).action, 'ban');
  // Failures spaced wider than findtime never ban.
  const slow = table({ loyalty: 2, findtimeMs: MIN });
  for (let i = 0; i < 1000; i++) assert.equal(slow.observe(ev('InvalidAccountID'), i * (MIN + 1)).action, 'none');
});

test('never banned: loopback, the AMI host, allow-list entries, whatever arrives', () => {
  const allow = AllowList.of(['198.51.100.0/24', '2001:db8:1::/48', '203.0.113.5']);
  const t = table({ loyalty: 1, isAllowed: (a, f) => allow.allows(a, f) });
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '198.51.100.77', '2001:db8:1:ffff::5', '203.0.113.5']) {
    for (let i = 0; i < 100; i++) assert.equal(t.observe(ev('InvalidPassword', a), i).action, 'allowed', a);
  }
  assert.equal(t.size, 0, 'allowed hosts are not even tracked');
  assert.equal(t.observe(ev('InvalidPassword', '203.0.113.6'), 1).action, 'ban');
  assert.equal(t.observe(ev('InvalidPassword', '2001:db8:2::1'), 1).action, 'ban');
});

test('the table is bounded: least recently seen hosts go first, and decisions stay right', () => {
  const t = table({ maxHosts: 1000 });
  t.observe(ev('ChallengeResponseFailed', '192.0.2.1'), 0);
  t.observe(ev('ChallengeResponseFailed', '192.0.2.1'), 1);
  for (let i = 0; i < 6_000; i++) {
    const a = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    assert.equal(t.observe(ev('InvalidAccountID', a), 2 + i).action, 'none');
    if (i % 500 === 0) assert.equal(t.observe(ev('ChallengeSent', '192.0.2.1'), 2 + i).action, 'none'); // keeps 192.0.2.1 recent (12 challenges < 15)
    assert.ok(t.size <= 1000);
  }
  assert.equal(t.size, 1000);
  assert.equal(t.failures('10.0.0.0', 7_000), 0, 'oldest host dropped');
  assert.equal(t.observe(ev('ChallengeResponseFailed', '192.0.2.1'), 7_000).action, 'ban', 'recent host kept its penalty');
});

test('prune drops hosts with nothing left in the window', () => {
  const t = table({ findtimeMs: MIN });
  for (let i = 0; i < 100; i++) t.observe(ev('InvalidAccountID', `10.0.0.${i}`), i * 100);
  assert.equal(t.prune(MIN + 4_999), 50);
  assert.equal(t.size, 50);
  assert.equal(t.prune(10 * MIN), 50);
  assert.equal(t.size, 0);
});

test('property: matches a naive reference model on random mixed traffic', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const random = rng(seed);
    const loyalty = 1 + Math.floor(random() * 5);
    const findtimeMs = 1000 * (1 + Math.floor(random() * 20));
    const t = table({ loyalty, findtimeMs });
    const hist = new Map<string, { f: number[]; c: number[]; cleared: number }>(); // reference: every event kept; cleared = f's length at the last success
    const kinds = ['ChallengeResponseFailed', 'InvalidAccountID', 'ChallengeSent', 'ChallengeSent', 'SuccessfulAuth', 'SuccessfulAuth', 'FailedACL', 'SomethingInformational'];
    // Few hosts: long histories; many: mostly one-failure hosts (the table's compact form).
    const hostsInPlay = seed % 2 ? 6 : 60;
    let now = 0;
    for (let i = 0; i < 4000; i++) {
      now += Math.floor(random() * 800);
      const address = `192.0.2.${Math.floor(random() * hostsInPlay)}`;
      const kind = kinds[Math.floor(random() * kinds.length)];
      const e = ev(kind, address, kind === 'SomethingInformational' ? 'Informational' : undefined);
      const h = hist.get(address) ?? { f: [], c: [], cleared: 0 };
      const inWindow = (x: number) => x >= now - findtimeMs;
      let expectBan = false;
      if (kind === 'SuccessfulAuth') { h.cleared = h.f.length; h.c = []; hist.set(address, h); }
      else if (e.severity === 'Error' || kind === 'ChallengeSent') {
        (e.severity === 'Error' ? h.f : h.c).push(now);
        const f = h.f.slice(h.cleared).filter(inWindow).length;
        const all = h.f.filter(inWindow).length;
        const c = h.c.filter(inWindow).length;
        expectBan = f >= loyalty || all >= 10 * loyalty || c >= 5 * loyalty;
        if (expectBan) hist.delete(address); else hist.set(address, h);
      }
      const v = t.observe(e, now);
      assert.equal(v.action === 'ban', expectBan, `seed ${seed} step ${i} ${kind} ${address}`);
      const ref = hist.get(address);
      const counted = ref ? ref.f.slice(ref.cleared).filter(inWindow).length : 0;
      assert.equal(t.failures(address, now), counted, `failures() seed ${seed} step ${i}`);
    }
  }
});

/** Replays a capture through the scoring the way the daemon does: banned hosts are skipped. */
function replay(names: string[], loyalty = 3): Set<string> {
  const allow = AllowList.of([]);
  const t = table({ loyalty, isAllowed: (a, f) => allow.allows(a, f) });
  const banned = new Set<string>();
  let now = 0;
  for (const name of names) {
    for (const e of fixtureEvents(name)) {
      now += 5;
      if (banned.has(e.address)) continue;
      if (t.observe(e, now).action === 'ban') banned.add(e.address);
    }
  }
  return banned;
}

test('fixture replay: exactly the attackers end up banned', () => {
  const expected: Record<string, string[]> = {
    'svwar.ami': ['10.99.0.2'],
    'svcrack.ami': ['10.99.0.2'],
    'success.ami': [],
    'acl.ami': ['10.99.0.2', 'fd99::2'],
    'tcp.ami': ['10.99.0.2'],
    'ipv6.ami': ['fd99::2'],
    'ami_badlogin.ami': [],
    'flood.ami': ['10.99.0.2'],
    'restart.ami': [],
    'restart-s2.ami': [],
  };
  for (const [name, hosts] of Object.entries(expected)) assert.deepEqual([...replay([name])].sort(), hosts, name);
  // The restart session pair: one wrong password before, one after: 2 < loyalty, nobody banned.
  assert.deepEqual([...replay(['restart.ami', 'restart-s2.ami'])], []);
  // With loyalty 2, the same pair bans: the penalty survives the AMI reconnect.
  assert.deepEqual([...replay(['restart.ami', 'restart-s2.ami'], 2)], ['10.99.0.2']);
  // Everything at once: the legitimate phone (10.99.0.3, fd99::3) and loopback never.
  const all = replay(fixtureNames());
  assert.ok(!all.has('10.99.0.3') && !all.has('fd99::3') && !all.has('127.0.0.1'));
});

test('fixture replay: the attacker is banned on its loyalty-th failure, not later', () => {
  for (const name of ['svcrack.ami', 'svwar.ami', 'tcp.ami', 'flood.ami']) {
    const t = table();
    let failures = 0;
    for (const e of fixtureEvents(name)) {
      if (e.address !== '10.99.0.2') continue;
      if (e.severity === 'Error') failures++;
      if (t.observe(e, 1).action === 'ban') break;
    }
    assert.equal(failures, 3, name);
  }
});

test('ban times escalate by factor up to the maximum; 0 is permanent', () => {
  const o = { bantimeMs: 3_600_000, factor: 4, maxMs: 30 * 86_400_000 };
  assert.equal(banDuration(0, o), 3_600_000);
  assert.equal(banDuration(1, o), 4 * 3_600_000);
  assert.equal(banDuration(2, o), 16 * 3_600_000);
  assert.equal(banDuration(5, o), 30 * 86_400_000);
  assert.equal(banDuration(10_000, o), 30 * 86_400_000);
  assert.equal(banDuration(3, { ...o, bantimeMs: 0 }), null);
  for (let n = 0; n < 50; n++) assert.ok(banDuration(n + 1, o)! >= banDuration(n, o)!);
});
