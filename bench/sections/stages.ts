/**
 * 5b. Where the daemon's time per event goes, stage by stage, in this process on one core
 * (no sockets, no namespaces): the same mix as section 5, below loyalty (no bans).
 *   ami-io      ami-io's own stream splitter and parser (what AmiConnection runs per chunk)
 *   parse       toSecurityEvent (src/events/parse.ts)
 *   scoring     PenaltyTable.observe (src/scoring/penalties.ts)
 *   history     Store.recordEvents in batches of 1,000 (src/store), as the daemon flushes
 *   ban         Decisions.ban: banCount + recordBan (database) per ban, kernel queue left out
 * Each is timed alone over the same events, several times; events/s = events / time.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amiio from 'ami-io/lib/index.js';
import { toSecurityEvent, type SecurityEvent } from '../../src/events';
import { PenaltyTable } from '../../src/scoring';
import { Store } from '../../src/store';
import { mixStream } from '../lib/data';
import { median, spread, type Row } from '../lib/report';
import type { Ctx } from './common';

function time(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

export interface StageResult { name: string; perSec: number[]; note: string }

export function measureStages(events: number, runs: number): StageResult[] {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-bench-stages-'));
  try {
    const stream = mixStream(join(dir, 'mix.ami'), events, 0, 3);
    const text = readFileSync(stream.file, 'utf8');
    const chunks: string[] = [];
    for (let i = 0; i < text.length; i += 65_536) chunks.push(text.slice(i, i + 65_536));
    const out: StageResult[] = [];

    // ami-io: a client that is never connected; its splitter is fed the chunks a socket would give.
    let msgs: Record<string, string>[] = [];
    const amiRuns: number[] = [];
    for (let k = 0; k < runs; k++) {
      const client = amiio.createClient({ host: '127.0.0.1', port: 1, login: 'x', password: 'x', logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} } } as never);
      const got: Record<string, string>[] = [];
      client.on('event', (m: Record<string, string>) => got.push(m));
      amiRuns.push(events / (time(() => { for (const c of chunks) client.splitMessages(c); }) / 1000));
      msgs = got;
    }
    if (msgs.length !== events) throw new Error(`ami-io gave ${msgs.length} of ${events} events`);
    out.push({ name: 'ami-io (split + parse)', perSec: amiRuns, note: 'node_modules/ami-io' });

    const parseRuns: number[] = [];
    let evs: SecurityEvent[] = [];
    for (let k = 0; k < runs; k++) {
      const got: SecurityEvent[] = [];
      parseRuns.push(events / (time(() => { for (const m of msgs) { const r = toSecurityEvent(m); if (r.ok) got.push(r.event); } }) / 1000));
      evs = got;
    }
    out.push({ name: 'parse (toSecurityEvent)', perSec: parseRuns, note: 'src/events/parse.ts' });

    const scoreRuns: number[] = [];
    for (let k = 0; k < runs; k++) {
      const table = new PenaltyTable({ loyalty: 3, findtimeMs: 600_000, maxHosts: 200_000, isAllowed: () => false });
      const now = Date.now();
      scoreRuns.push(events / (time(() => { for (let i = 0; i < evs.length; i++) table.observe(evs[i], now + i); }) / 1000));
    }
    out.push({ name: 'scoring (PenaltyTable.observe)', perSec: scoreRuns, note: 'src/scoring/penalties.ts' });

    const errors = evs.filter((e) => e.severity === 'Error');
    const histRuns: number[] = [];
    for (let k = 0; k < runs; k++) {
      const store = new Store(join(dir, `h${k}.db`), 20);
      const now = Date.now();
      histRuns.push(events / (time(() => {
        for (let i = 0; i < errors.length; i += 1000) store.history.recordEvents(errors.slice(i, i + 1000).map((event, j) => ({ event, at: now + i + j })));
      }) / 1000));
      store.close();
    }
    out.push({ name: `history (recordEvents, ${errors.length.toLocaleString('en-US')} failures of them)`, perSec: histRuns, note: 'src/store/index.ts; per event of the mix' });

    const banRuns: number[] = [];
    const nb = Math.min(2000, errors.length);
    for (let k = 0; k < runs; k++) {
      const store = new Store(join(dir, `b${k}.db`), 20);
      const now = Date.now();
      banRuns.push(nb / (time(() => {
        for (let i = 0; i < nb; i++) {
          const e = errors[i];
          store.bans.banCount(e.address);
          store.bans.recordBan({ address: e.address, family: e.family, now, until: now + 3_600_000, source: 'auto', reasonKind: e.kind, reasonService: e.service, reasonAccount: e.account, failures: 3 });
        }
      }) / 1000));
      store.close();
    }
    out.push({ name: 'ban in the database (banCount + recordBan)', perSec: banRuns, note: 'src/store/index.ts; bans/s' });
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function stagesSection(ctx: Ctx): Promise<Row[]> {
  const events = ctx.quick ? 20_000 : 100_000;
  const runs = ctx.quick ? 3 : 5;
  const res = measureStages(events, runs);
  return res.map((s) => {
    ctx.log(`  stage ${s.name}: ${s.perSec.map((x) => Math.round(x)).join(', ')} /s`);
    const what = s.name.startsWith('ban') ? '2,000 bans of hosts from that mix' : `${events.toLocaleString('en-US')} events of the no-ban mix`;
    return { section: '5 Throughput', measure: `in-process stage alone: ${s.name}`, variant: s.note, value: median(s.perSec), unit: '/s', spread: spread(s.perSec), runs, digits: 0, how: `${what}, one core` };
  });
}
