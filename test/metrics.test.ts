import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics, parseListen } from '../src/metrics';

test('metrics: every series named in the spec, events counted per kind and service at scrape', async () => {
  const m = new Metrics({ activeBans: () => ({ v4: 3, v6: 1 }), trackedHosts: () => 7, amiConnected: () => true, amiReconnects: () => 2, amiMalformed: () => 4, amiMerged: () => 5, amiDistrusted: () => 6, firewallInSync: () => true, firewallProcesses: () => 9, firewallSetFull: () => 12 });
  for (let i = 0; i < 5; i++) m.event('ChallengeResponseFailed', 'PJSIP');
  m.event('InvalidAccountID', 'SIP');
  m.ban('auto'); m.ban('manual'); m.unban('expired'); m.firewallFailure('add'); m.observeReaction(0.004);
  const text = await m.render();
  for (const line of [
    'ampere_events_total{kind="ChallengeResponseFailed",service="PJSIP"} 5', 'ampere_events_total{kind="InvalidAccountID",service="SIP"} 1',
    'ampere_bans_total{source="auto"} 1', 'ampere_bans_total{source="manual"} 1', 'ampere_unbans_total{reason="expired"} 1',
    'ampere_active_bans{family="ipv4"} 3', 'ampere_active_bans{family="ipv6"} 1', 'ampere_tracked_hosts 7', 'ampere_ami_connected 1',
    'ampere_ami_reconnects_total 2', 'ampere_ami_malformed_total 4', 'ampere_ami_merged_total 5', 'ampere_ami_distrusted_total 6', 'ampere_firewall_in_sync 1', 'ampere_firewall_command_failures_total{op="add"} 1', 'ampere_firewall_processes_total 9', 'ampere_firewall_set_full_total 12',
    'ampere_ban_reaction_seconds_bucket{le="0.005"} 1', 'ampere_ban_reaction_seconds_count 1',
  ]) assert.ok(text.split('\n').includes(line), `missing: ${line}`);
  m.event('ChallengeResponseFailed', 'PJSIP');
  assert.ok((await m.render()).includes('ampere_events_total{kind="ChallengeResponseFailed",service="PJSIP"} 6'), 'counters move by the delta');
  assert.deepEqual(parseListen('127.0.0.1:9327'), { host: '127.0.0.1', port: 9327 });
  assert.deepEqual(parseListen('[::1]:9327'), { host: '::1', port: 9327 });
  assert.throws(() => parseListen('9327'));
});

test('metrics: the webhook\'s delivered, failed and dropped counts follow its state; its queue is a gauge; none without notify_url', async () => {
  const state = { queued: 3, delivered: 2, failed: 0, dropped: 0 };
  let on = true;
  const m = new Metrics({ activeBans: () => ({ v4: 0, v6: 0 }), trackedHosts: () => 0, amiConnected: () => true, amiReconnects: () => 0, amiMalformed: () => 0, amiMerged: () => 0, amiDistrusted: () => 0, firewallInSync: () => true, notify: () => (on ? state : null) });
  const lines = async () => (await m.render()).split('\n').filter((l) => l.startsWith('ampere_notify_'));
  assert.deepEqual(await lines(), ['ampere_notify_total{result="delivered"} 2', 'ampere_notify_queued 3']);
  Object.assign(state, { queued: 0, delivered: 4, failed: 1, dropped: 7 });
  assert.deepEqual(await lines(), ['ampere_notify_total{result="delivered"} 4', 'ampere_notify_total{result="failed"} 1', 'ampere_notify_total{result="dropped"} 7', 'ampere_notify_queued 0']);
  on = false;
  assert.deepEqual(await lines(), ['ampere_notify_total{result="delivered"} 4', 'ampere_notify_total{result="failed"} 1', 'ampere_notify_total{result="dropped"} 7', 'ampere_notify_queued 0'], 'counters never go back');
});
