import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRemoteAddress, toSecurityEvent, sanitizeAccount } from '../src/events';
import { canonicalIp } from '../src/net/ip';
import { fixtureEvents, fixtureMessages, fixtureNames } from './helpers/fixtures';

// Counts by Event type from shared/fixtures/ami/README.md (security events only).
const EXPECTED: Record<string, Record<string, number>> = {
  'svwar.ami': { ChallengeSent: 29, InvalidAccountID: 21, FailedACL: 3, SuccessfulAuth: 1 },
  'svcrack.ami': { ChallengeResponseFailed: 31, InvalidAccountID: 12, ChallengeSent: 2, SuccessfulAuth: 1 },
  'success.ami': { SuccessfulAuth: 5, ChallengeSent: 4 },
  'acl.ami': { FailedACL: 9, ChallengeResponseFailed: 5, ChallengeSent: 4, SuccessfulAuth: 1 },
  'tcp.ami': { ChallengeSent: 28, InvalidAccountID: 20, ChallengeResponseFailed: 5, FailedACL: 1, SuccessfulAuth: 1 },
  'ipv6.ami': { ChallengeResponseFailed: 22, ChallengeSent: 15, InvalidAccountID: 9, FailedACL: 1, SuccessfulAuth: 1 },
  'ami_badlogin.ami': { InvalidPassword: 3, SuccessfulAuth: 2, InvalidAccountID: 1, FailedACL: 1 },
  'flood.ami': { InvalidAccountID: 3001, ChallengeSent: 3001, SuccessfulAuth: 1 },
  'restart.ami': { SuccessfulAuth: 2, ChallengeSent: 1, ChallengeResponseFailed: 1 },
  'restart-s2.ami': { SuccessfulAuth: 1, ChallengeSent: 1, ChallengeResponseFailed: 1 },
  'restart.debug.ami': { SuccessfulAuth: 1, ChallengeSent: 1, ChallengeResponseFailed: 1 },
  'restart.debug-s2.ami': { SuccessfulAuth: 2, ChallengeSent: 1, ChallengeResponseFailed: 1 },
};

test('every fixture parses: every security event typed, nothing else, none malformed', () => {
  assert.deepEqual(fixtureNames(), Object.keys(EXPECTED).sort());
  for (const name of fixtureNames()) {
    const counts: Record<string, number> = {};
    for (const m of fixtureMessages(name)) {
      const r = toSecurityEvent(m);
      if (r.ok) counts[r.event.kind] = (counts[r.event.kind] ?? 0) + 1;
      else assert.equal(r.ignored, true, `${name}: ${r.reason}`);
    }
    assert.deepEqual(counts, EXPECTED[name], name);
  }
});

test('fixture hosts, families, transports and severities are what the README says', () => {
  const hosts = new Set<string>();
  for (const name of fixtureNames()) {
    for (const e of fixtureEvents(name)) {
      hosts.add(e.address);
      assert.equal(e.family, e.address.includes(':') ? 6 : 4);
      assert.ok(['UDP', 'TCP'].includes(e.transport!), `${name} transport ${e.transport}`);
      assert.ok(e.port! > 0);
      const expected = ['ChallengeSent', 'SuccessfulAuth'].includes(e.kind) ? 'Informational' : 'Error';
      assert.equal(e.severity, expected, `${name} ${e.kind}`);
      if (e.service === 'AMI') assert.equal(e.address, '127.0.0.1');
    }
  }
  assert.deepEqual([...hosts].sort(), ['10.99.0.2', '10.99.0.3', '127.0.0.1', 'fd99::2', 'fd99::3']);
});

test('RemoteAddress in all its forms', () => {
  assert.deepEqual(parseRemoteAddress('IPV4/UDP/10.99.0.2/5060'), { address: '10.99.0.2', family: 4, transport: 'UDP', port: 5060 });
  assert.deepEqual(parseRemoteAddress('IPV6/TCP/fd99::2/59338'), { address: 'fd99::2', family: 6, transport: 'TCP', port: 59338 });
  assert.deepEqual(parseRemoteAddress('IPV4/10.0.0.1/5060'), { address: '10.0.0.1', family: 4, transport: null, port: 5060 });
  assert.deepEqual(parseRemoteAddress('IPV6/UDP/fe80::1%eth0/5060'), { address: 'fe80::1', family: 6, transport: 'UDP', port: 5060 });
  assert.deepEqual(parseRemoteAddress('IPV6/WSS/[2001:DB8:0:0:0:0:0:1]/443'), { address: '2001:db8::1', family: 6, transport: 'WSS', port: 443 });
  assert.deepEqual(parseRemoteAddress('IPV6/UDP/::ffff:192.0.2.5/5060'), { address: '192.0.2.5', family: 4, transport: 'UDP', port: 5060 });
  assert.deepEqual(parseRemoteAddress('IPV4/TLS/192.0.2.1'), { address: '192.0.2.1', family: 4, transport: 'TLS', port: null });
  for (const bad of ['', 'IPV4', 'IPV4/UDP/10.0.0.256/5060', 'IPV4/UDP/1.2.3.4; rm -rf //5060', 'IPV5/UDP/1.2.3.4/1', 'IPV4/UDP/1.2.3.4/99999', 'IPV4/UDP/host.example/5060', 'IPV4/UDP/1.2.3.4/5060/x', 'IPV6/UDP/::1 -j ACCEPT/5060']) {
    assert.equal(parseRemoteAddress(bad), null, bad);
  }
});

test('canonical IPs: one text per address', () => {
  assert.equal(canonicalIp('2001:0db8:0000:0000:0000:0000:0000:0001')!.address, '2001:db8::1');
  assert.equal(canonicalIp('2001:db8:0:1:0:0:0:1')!.address, '2001:db8:0:1::1');
  assert.equal(canonicalIp('::')!.address, '::');
  assert.equal(canonicalIp('1:0:0:2:0:0:0:3')!.address, '1:0:0:2::3');
  assert.equal(canonicalIp('01.2.3.4'), null);
  assert.equal(canonicalIp('1.2.3.4/32'), null);
  assert.equal(canonicalIp('-1.2.3.4'), null);
});

test('malformed security events are reported, not thrown; unknown events and fields ignored', () => {
  const base = { event: 'ChallengeResponseFailed', privilege: 'security,all', severity: 'Error', service: 'PJSIP', accountid: '100', remoteaddress: 'IPV4/UDP/192.0.2.9/5060' };
  const ok = toSecurityEvent({ ...base, systemname: 'pbx1', sequencenumber: '7', somethingnew: 'x' });
  assert.ok(ok.ok && ok.event.address === '192.0.2.9' && ok.event.account === '100');
  const noAddr = toSecurityEvent({ ...base, remoteaddress: undefined });
  assert.ok(!noAddr.ok && !noAddr.ignored);
  const badAddr = toSecurityEvent({ ...base, remoteaddress: 'IPV4/UDP/evil/5060' });
  assert.ok(!badAddr.ok && !badAddr.ignored && /unreadable RemoteAddress/.test(badAddr.reason));
  const notSecurity = toSecurityEvent({ event: 'PeerStatus', privilege: 'system,all' });
  assert.ok(!notSecurity.ok && notSecurity.ignored);
  // A future security event with Error severity still counts.
  const future = toSecurityEvent({ ...base, event: 'SomethingNew', severity: 'Error' });
  assert.ok(future.ok && future.event.severity === 'Error');
  // Missing severity falls back to the known table.
  const noSev = toSecurityEvent({ ...base, severity: undefined });
  assert.ok(noSev.ok && noSev.event.severity === 'Error');
  assert.ok(!toSecurityEvent({}).ok);
});

test('text from an event is hostile: control, format and separator characters stripped, length cut', () => {
  assert.equal(sanitizeAccount('a\r\nb\u0000c'), 'abc');
  assert.equal(sanitizeAccount('x'.repeat(1000)).length, 255);
  const base = { event: 'InvalidAccountID', privilege: 'security,all', severity: 'Error', remoteaddress: 'IPV4/UDP/192.0.2.9/5060' };
  const r = toSecurityEvent({ ...base, service: 'PJ\u200bSIP\u2028', accountid: "'; DROP TABLE hosts; --\u001b[31m\u202egnp.exe\u2029", sessionid: 'a\u0085b\u00adc\u2066d' });
  assert.ok(r.ok);
  assert.equal(r.event.account, "'; DROP TABLE hosts; --[31mgnp.exe");
  assert.equal(r.event.service, 'PJSIP');
  assert.equal(r.event.sessionId, 'abcd');
  const k = toSecurityEvent({ ...base, event: 'Evil\r\nKind\u202e', severity: 'Error' });
  assert.ok(k.ok && k.event.kind === 'EvilKind');
  const only = toSecurityEvent({ ...base, event: '\u200e\u0007' });
  assert.ok(!only.ok && !only.ignored, 'a kind of unsafe characters only is refused');
});

test('event kinds are looked up in a Map: constructor, __proto__, toString are not known kinds', () => {
  for (const kind of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
    const r = toSecurityEvent({ event: kind, remoteaddress: 'IPV4/UDP/192.0.2.9/5060' });
    assert.ok(!r.ok && r.ignored, `${kind} without the security privilege is not a security event`);
    const s = toSecurityEvent({ event: kind, privilege: 'security,all', remoteaddress: 'IPV4/UDP/192.0.2.9/5060' });
    assert.ok(!s.ok && !s.ignored, `${kind} has no known Severity of its own`);
  }
  const known = toSecurityEvent({ event: 'InvalidAccountID', remoteaddress: 'IPV4/UDP/192.0.2.9/5060' });
  assert.ok(known.ok && known.event.severity === 'Error');
});
