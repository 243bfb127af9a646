import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BanResult } from '../src/decisions';
import { EventPipeline, HISTORY_BATCH, MAX_UNWRITTEN_EVENTS, type PipelineParts } from '../src/daemon/pipeline';
import { newStats } from '../src/daemon/status';
import type { SecurityEvent } from '../src/events';
import { PenaltyTable } from '../src/scoring';

/** An AMI security event as the reader hands it over (lower-case header names). */
const failure = (address: string, event = 'InvalidPassword') => ({
  event, privilege: 'security,all', severity: 'Error', service: 'PJSIP', accountid: '100',
  sessionid: '1', remoteaddress: `IPV4/UDP/${address}/5060`, localaddress: 'IPV4/UDP/192.0.2.1/5060',
});
const success = (address: string) => ({
  event: 'SuccessfulAuth', privilege: 'security,all', severity: 'Informational', service: 'PJSIP', accountid: '100',
  sessionid: '1', remoteaddress: `IPV4/UDP/${address}/5060`, usingpassword: '1',
});

/** A pipeline over the real (pure) penalty table and fakes for everything with a side effect. */
function rig(opts: { failWrites?: boolean; banThrows?: boolean } = {}) {
  const banned = new Set<string>();
  const bans: { address: string; failures: number }[] = [];
  const written: { event: SecurityEvent; at: number }[][] = [];
  const health: string[] = [];
  const reactions: number[] = [];
  const events: string[] = [];
  const historyCounts: number[] = [];
  let applied!: () => void;
  const penalties = new PenaltyTable({ loyalty: 3, findtimeMs: 600_000, maxHosts: 1000 });
  const parts: PipelineParts = {
    stats: newStats(0),
    hearing: { heard: () => {} },
    window: { add: () => {} },
    penalties,
    decisions: {
      isBanned: (a) => banned.has(a),
      banFromEvent: (e, failures): BanResult => {
        if (opts.banThrows) throw new Error('database is locked');
        banned.add(e.address);
        bans.push({ address: e.address, failures });
        return { address: e.address, family: e.family, until: null, banCount: 1, applied: new Promise<void>((r) => { applied = r; }) };
      },
      storeHealth: { ok: (what) => health.push(`ok ${what}`), failed: (what) => health.push(`failed ${what}`) },
    },
    history: { recordEvents: (batch) => { if (opts.failWrites) throw new Error('disk full'); written.push(batch); } },
    firewall: { healthy: true },
    log: { debug: () => {} },
    telemetry: { event: (kind, service) => events.push(`${kind}/${service}`), observeReaction: (s) => reactions.push(s) },
    onHistoryWritten: (n) => historyCounts.push(n),
  };
  const pipeline = new EventPipeline(parts);
  return { pipeline, parts, penalties, banned, bans, written, health, reactions, events, historyCounts, apply: () => applied() };
}

test('the third failure within findtime bans the host once; its later events cost nothing', async () => {
  const r = rig();
  for (let i = 0; i < 3; i++) r.pipeline.handle(failure('198.51.100.7'), 1000 + i);
  assert.deepEqual(r.bans, [{ address: '198.51.100.7', failures: 3 }]);
  r.pipeline.handle(failure('198.51.100.7'), 2000);
  assert.equal(r.bans.length, 1, 'a banned host is not scored again');
  assert.equal(r.parts.stats.events, 4);
  assert.equal(r.parts.stats.byKind.InvalidPassword, 4);
  assert.equal(r.events.length, 4, 'every event reaches the metrics');
  r.apply();
  await new Promise((res) => setImmediate(res));
  assert.equal(r.reactions.length, 1, 'the reaction is measured once the kernel holds the ban');
});

test('a lone failure never reaches the history; a repeating host and its ban do, in one batch per flush', () => {
  const r = rig();
  r.pipeline.handle(failure('203.0.113.1'), 1);
  r.pipeline.flush();
  assert.equal(r.written.length, 0, 'a spoofed source sending one failure is not written');
  for (let i = 0; i < 3; i++) r.pipeline.handle(failure('203.0.113.2'), 10 + i);
  assert.equal(r.pipeline.unwrittenCount, 2, 'the second failure and the banning one');
  r.pipeline.flush();
  assert.equal(r.written.length, 1);
  assert.deepEqual(r.written[0].map((w) => w.event.address), ['203.0.113.2', '203.0.113.2']);
  assert.deepEqual(r.historyCounts, [2]);
  assert.deepEqual(r.health, ['ok history']);
});

test('the history is written without waiting for the flush job once a batch is full', () => {
  const r = rig();
  for (let i = 0; i < HISTORY_BATCH / 2 + 1; i++) {
    // two failures each: the second of each is written; none reaches loyalty 3
    r.pipeline.handle(failure(`10.0.${i >> 8}.${i & 255}`), i);
    r.pipeline.handle(failure(`10.0.${i >> 8}.${i & 255}`), i);
  }
  assert.equal(r.written.length, 0, 'not yet: half a batch');
  for (let i = 0; i < HISTORY_BATCH / 2; i++) r.pipeline.handle(failure(`10.1.${i >> 8}.${i & 255}`), i), r.pipeline.handle(failure(`10.1.${i >> 8}.${i & 255}`), i);
  assert.equal(r.written.length, 1);
  assert.equal(r.written[0].length, HISTORY_BATCH);
});

test('a history that cannot be written keeps the newest events, bounded, and says so', () => {
  const r = rig({ failWrites: true });
  for (let i = 0; i < 3; i++) r.pipeline.handle(failure('203.0.113.9'), i);
  r.pipeline.flush();
  assert.equal(r.pipeline.unwrittenCount, 2, 'kept for the next flush');
  assert.deepEqual(r.health, ['failed history']);
  assert.ok(MAX_UNWRITTEN_EVENTS >= HISTORY_BATCH);
});

test('malformed and ignored messages are skipped; only malformed security events are counted', () => {
  const r = rig();
  r.pipeline.handle({ event: 'InvalidPassword', severity: 'Error', remoteaddress: 'garbage' }, 1);
  r.pipeline.handle({ event: 'Newchannel', channel: 'PJSIP/100' }, 2);
  r.pipeline.handle({ event: 'InvalidPassword', remoteaddress: 'IPV4/UDP/__proto__/5060', service: 'constructor' }, 3);
  assert.equal(r.parts.stats.events, 0);
  assert.equal(r.parts.stats.malformed, 2);
  assert.equal(r.bans.length, 0);
});

test('an event kind named like an Object member is only a key', () => {
  const r = rig();
  r.pipeline.handle(failure('198.51.100.20', 'constructor'), 1);
  r.pipeline.handle(failure('198.51.100.20', '__proto__'), 2);
  assert.equal(r.parts.stats.byKind.constructor, 1);
  assert.equal(r.parts.stats.byKind.__proto__, 1);
});

test('a successful login clears the penalty; a database failure on the ban path does not throw into the reader', () => {
  const r = rig();
  r.pipeline.handle(failure('198.51.100.30'), 1);
  r.pipeline.handle(failure('198.51.100.30'), 2);
  r.pipeline.handle(success('198.51.100.30'), 3);
  r.pipeline.handle(failure('198.51.100.30'), 4);
  assert.equal(r.bans.length, 0, 'the cleared failures no longer count');
  const broken = rig({ banThrows: true });
  assert.doesNotThrow(() => { for (let i = 0; i < 3; i++) broken.pipeline.handle(failure('198.51.100.31'), i); });
});
