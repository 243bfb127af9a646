import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostAddress, storedAddress } from '../src/control/routes';
import { HttpError } from '../src/control/server';
import { parseRemoteAddress, toSecurityEvent } from '../src/events';
import { checkedIp } from '../src/firewall/exec';
import { applyLegacy } from '../src/legacy/import';
import { decodeLegacyAddr, encodeLegacyAddr } from '../src/legacy';
import { isBannable, notSingleHost, parseHost } from '../src/net/ip';

/** Addresses that can never be one remote host, with the words their reason must carry. */
const NOT_HOSTS: [string, RegExp][] = [
  ['0.0.0.0', /unspecified/], ['0.1.2.3', /0\.0\.0\.0\/8/], ['224.0.0.1', /multicast/], ['239.255.255.250', /multicast/],
  ['255.255.255.255', /broadcast/], ['240.0.0.1', /class E/], ['254.1.2.3', /class E/],
  ['::', /unspecified/], ['ff02::1', /multicast/], ['ff05::1:3', /multicast/], ['ff00::', /multicast/], ['fffe:1::2', /multicast/],
];
const HOSTS = ['1.0.0.0', '192.0.2.1', '223.255.255.255', '198.51.100.200', '2001:db8::1', 'fe80::1', 'ff:1::1', 'fe00::1', '::2'];

test('notSingleHost / parseHost: every class is refused with its reason, single hosts pass', () => {
  for (const [a, why] of NOT_HOSTS) {
    const f = a.includes(':') ? 6 : 4;
    assert.match(notSingleHost(a, f) ?? '', why, a);
    const p = parseHost(a);
    assert.ok(!p.ok && p.reason.startsWith(`${a} is not a single host`), a);
    assert.equal(isBannable(a, f), false, a);
    assert.throws(() => checkedIp(a, f), /not a single host/, a);
  }
  for (const a of HOSTS) {
    assert.equal(notSingleHost(a, a.includes(':') ? 6 : 4), null, a);
    assert.deepEqual(parseHost(a), { ok: true, address: a, family: a.includes(':') ? 6 : 4 });
  }
  // Non-canonical spellings of the same addresses are caught after canonicalisation.
  for (const t of ['0:0::0', '::ffff:0.0.0.0', '::ffff:224.0.0.1', 'FF02::1', '[::]']) assert.equal(parseHost(t).ok, false, t);
  assert.equal(parseHost('nonsense').ok, false);
});

test('the claimed family must match the text; an IPv4-mapped IPv6 address is its IPv4 address', () => {
  assert.deepEqual(parseHost('192.0.2.1', 6), { ok: false, reason: 'IPv4 address given as IPv6' });
  assert.deepEqual(parseHost('2001:db8::1', 4), { ok: false, reason: 'IPv6 address given as IPv4' });
  assert.deepEqual(parseHost('::ffff:192.0.2.1', 4), { ok: false, reason: 'IPv6 address given as IPv4' });
  assert.deepEqual(parseHost('::ffff:192.0.2.1', 6), { ok: true, address: '192.0.2.1', family: 4 });
  assert.deepEqual(parseHost('::ffff:c000:201', 6), { ok: true, address: '192.0.2.1', family: 4 });
});

test('events: no RemoteAddress that cannot be one host, or of the other family, gives an event', () => {
  const event = (remote: string) => toSecurityEvent({ event: 'ChallengeResponseFailed', severity: 'Error', service: 'SIP', remoteaddress: remote, accountid: '100' });
  for (const [a] of NOT_HOSTS) {
    const fam = a.includes(':') ? 'IPV6' : 'IPV4';
    for (const text of [`${fam}/UDP/${a}/5060`, `${fam}/${a}/5060`, `${fam}/UDP/${a}`]) {
      assert.equal(parseRemoteAddress(text), null, text);
      assert.equal(event(text).ok, false, text);
    }
  }
  for (const text of ['IPV4/UDP/2001:db8::1/5060', 'IPV6/UDP/192.0.2.1/5060', 'IPV4/UDP/::ffff:192.0.2.1/5060', 'IPV6/UDP/::ffff:0.0.0.0/5060', 'IPV6/UDP/[::]/5060', 'IPV6/UDP/::%eth0/5060']) {
    assert.equal(parseRemoteAddress(text), null, text);
  }
  // A dual-stack socket's view of an IPv4 peer: banned as the IPv4 address, where its packets arrive.
  const mapped = event('IPV6/UDP/::ffff:198.51.100.7/5060');
  assert.ok(mapped.ok);
  assert.deepEqual([mapped.event.address, mapped.event.family], ['198.51.100.7', 4]);
  // Every first octet: accepted exactly when the address is a single host.
  for (let o = 0; o < 256; o++) {
    const a = `${o}.1.2.3`;
    assert.equal(parseRemoteAddress(`IPV4/UDP/${a}/5060`) !== null, notSingleHost(a, 4) === null, a);
    assert.equal(parseRemoteAddress(`IPV4/UDP/${a}/5060`) !== null, o >= 1 && o <= 223, a);
  }
});

test('ampere ban (the control route) refuses them with the reason; unban takes any stored text', () => {
  for (const [a, why] of NOT_HOSTS) {
    assert.throws(() => hostAddress(a), (e: unknown) => e instanceof HttpError && e.status === 400 && why.test(e.message) && e.message.includes('not a single host'), a);
  }
  assert.throws(() => hostAddress('192.0.2.0/24'), /is a network/);
  assert.deepEqual(hostAddress('::ffff:192.0.2.9'), { address: '192.0.2.9', family: 4 });
  for (const t of ['0.0.0.0', '::', '192.0.2.010', 'ff02::1']) assert.equal(storedAddress(` ${t} `), t);
  for (const bad of ['', '  ', 'a\nb', 'nonsense', '1.2.3.4 -j ACCEPT', '1'.repeat(65), 7]) assert.throws(() => storedAddress(bad), HttpError, String(bad));
});

test('legacy import: decoding and applying refuse what cannot be one host, with the reason', () => {
  for (const a of ['0.1.2.3', '224.0.0.1', '239.1.2.3', '240.0.0.1', '254.0.0.9']) {
    const d = decodeLegacyAddr(encodeLegacyAddr(a));
    assert.ok(!d.ok && d.reason.includes(`decodes to ${a}, not a single host`), a);
  }
  const banned: string[] = [];
  const r = applyLegacy(
    [{ address: '192.0.2.1', account: '' }, { address: '0.0.0.0', account: '' }, { address: '224.0.0.5', account: '' }, { address: '255.255.255.255', account: '' }, { address: '2001:db8::1', account: '' }],
    { allowed: () => undefined, isBanned: () => false, ban: (e) => banned.push(e.address) },
  );
  assert.deepEqual(banned, ['192.0.2.1']);
  assert.deepEqual(r.refused.map((x) => [x.address, x.reason.replace(/:.*/, '')]), [
    ['0.0.0.0', '0.0.0.0 is not a single host'], ['224.0.0.5', '224.0.0.5 is not a single host'],
    ['255.255.255.255', '255.255.255.255 is not a single host'], ['2001:db8::1', 'not an IPv4 address'],
  ]);
});
