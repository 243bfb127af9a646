import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jumpOk, jumpRepair, jumpState, ownJumps, parsePorts } from '../src/firewall/jump';
import { chainView } from '../src/firewall/verify';
import { loadConfig } from '../src/config';

test('ports: a list of ports and ranges in the form iptables prints; at most 15 units; anything else refused', () => {
  assert.deepEqual(parsePorts(''), { ok: '' });
  assert.deepEqual(parsePorts('5060, 5061 ,10000:20000'), { ok: '5060,5061,10000:20000' });
  assert.deepEqual(parsePorts('05060'), { ok: '5060' });
  for (const bad of ['0', '65536', '5060-5061', '20000:10000', '5060:5060', 'sip', '5060;reboot', '-j ACCEPT', '1:', ':5']) {
    assert.ok('allowed' in parsePorts(bad), bad);
  }
  assert.deepEqual(parsePorts(Array.from({ length: 15 }, (_, i) => 5000 + i).join(',')).hasOwnProperty('ok'), true);
  assert.match((parsePorts(Array.from({ length: 8 }, (_, i) => `${1000 + 10 * i}:${1005 + 10 * i}`).join(',')) as { allowed: string }).allowed, /\(16 given\)/);
  const env = (ports: string) => ({ AMPERE_ENV_FILE: '/nonexistent', AMPERE_CONFIG: '/dev/null', AMPERE_PORTS: ports });
  assert.equal(loadConfig(env(' 5060,10000:20000')).config.ports, '5060,10000:20000');
  assert.throws(() => loadConfig(env('5060,70000')), /invalid ports: .*bad entry "70000"/);
});

test('jump state: Ampere\'s own jumps for the configured ports; another jump is the operator\'s and respected', () => {
  const plain = '-A INPUT -j ampere';
  const [udp, tcp] = ownJumps('ampere', '5060,10000:20000');
  assert.equal(udp, '-A INPUT -p udp -m multiport --dports 5060,10000:20000 -j ampere');
  assert.equal(tcp, '-A INPUT -p tcp -m multiport --dports 5060,10000:20000 -j ampere');
  // every port: the plain jump
  assert.ok(jumpOk(jumpState(['-P INPUT ACCEPT', plain], 'ampere', '')));
  assert.deepEqual(jumpRepair(jumpState([], 'ampere', '')), ['-I INPUT 1 -j ampere']);
  // ports set: the plain jump (ours, from before) is replaced by the two
  const s = jumpState([plain], 'ampere', '5060,10000:20000');
  assert.ok(!jumpOk(s));
  assert.deepEqual(jumpRepair(s), [`-I INPUT 1 ${udp.slice(9)}`, `-I INPUT 1 ${tcp.slice(9)}`, '-D INPUT -j ampere']);
  assert.ok(jumpOk(jumpState([tcp, udp], 'ampere', '5060,10000:20000')));
  // other ports than configured: stale, replaced
  const other = jumpState(['-A INPUT -p udp -m multiport --dports 5060 -j ampere', '-A INPUT -p tcp -m multiport --dports 5060 -j ampere'], 'ampere', '5061');
  assert.deepEqual([other.missing.length, other.stale.length], [2, 2]);
  // back to every port
  assert.deepEqual(jumpRepair(jumpState([tcp, udp], 'ampere', '')), ['-I INPUT 1 -j ampere', `-D ${tcp.slice(3)}`, `-D ${udp.slice(3)}`]);
  // the operator's own jump, anywhere: nothing added, nothing removed
  for (const mine of ['-A INPUT -i eth1 -j ampere', '-A mine -p udp --dport 5060 -j ampere', '-A INPUT -p udp -m udp --dport 5060 -g ampere']) {
    const st = jumpState([mine, plain], 'ampere', '5060');
    assert.ok(st.operator && jumpOk(st), mine);
    assert.deepEqual(jumpRepair(st), []);
  }
  // another chain's jump is not ours
  assert.ok(!jumpOk(jumpState(['-A INPUT -j ampere2'], 'ampere', '')));
});

test('the reconciler sees a jump for other ports as drift, and a missing one as before', () => {
  const ok = (r: string, last: boolean) => (last ? r === '-j RETURN' : r.startsWith('-m set'));
  const base = ['-P INPUT ACCEPT', '-N ampere', '-A ampere -m set --match-set ampere-v4 src -j DROP', '-A ampere -j RETURN'];
  const [udp, tcp] = ownJumps('ampere', '5060');
  assert.deepEqual(chainView([...base, udp, tcp], 'ampere', '5060', 4, ok, 2).drifts, []);
  assert.deepEqual(chainView([...base, udp], 'ampere', '5060', 4, ok, 2).drifts.map((d) => d.detail), ['jump missing from INPUT'], 'one of the two deleted');
  assert.deepEqual(chainView([...base, '-A INPUT -j ampere'], 'ampere', '5060', 4, ok, 2).drifts.map((d) => d.detail), ['jump in INPUT for other ports']);
});
