import { isAbsolute } from 'node:path';
import type { BackupScheduler } from '../backup';
import { BanNotStoredYet, type BanResult, type Decisions } from '../decisions';
import type { FirewallQueue } from '../firewall';
import type { Logger } from '../log';
import type { AllowEffects, AllowList } from '../allow';
import { parseCidr } from '../net/cidr';
import { canonicalIp, parseHost, type Family } from '../net/ip';
import { parseRange } from '../net/range';
import { localConflict, localNetworks } from '../allow/local';
import type { PenaltyTable } from '../scoring';
import { OPERATOR_LOCK_WAIT_MS, type Store } from '../store';
import { HttpError, type ControlAnswer, type ControlHandler, type ControlRequest } from './server';
import { allowRoutes } from './allow-routes';
import { ReloadRefused } from '../daemon/reload';
import { importRoutes } from './import-routes';
import { historyView, listBanPageJson, MAX_PAGE, parseBanFilter } from './views';

/** The running daemon's parts the control API steers. */
type Route = (r: ControlRequest) => Promise<ControlAnswer> | ControlAnswer;

export interface ControlDeps {
  store: Store;
  decisions: Decisions;
  penalties: PenaltyTable;
  /** The allow list: the fixed entries and the runtime ones, and what adding one does. */
  allow: AllowList;
  /** What adding an allow entry does to bans and penalties (shared with a reload). */
  allowEffects: AllowEffects;
  firewall: FirewallQueue;
  backups: BackupScheduler;
  log: Logger;
  status(): object;
  health(): { healthy: boolean; problems: string[] };
  /** Re-reads the configuration; throws ReloadRefused when it is invalid. Absent: no reload route. */
  reload?(): Promise<{ applied: string[]; needsRestart: string[] }>;
}

/** Longest ban a person may ask for (a century): keeps `until` a safe integer. */
const MAX_BAN_MS = 100 * 365 * 86_400_000;

/** One host address, canonical; refuses networks, junk and the unspecified address with a clear message. */
export function hostAddress(value: unknown): { address: string; family: Family } {
  if (typeof value !== 'string' || value.trim() === '') throw new HttpError(400, 'an IP address is required');
  if (value.includes('/') && parseCidr(value)) throw new HttpError(400, `${JSON.stringify(value)} is a network; give one IP address`);
  const ip = parseHost(value);
  if (!ip.ok) throw new HttpError(400, ip.reason === 'not an IP address' ? `${JSON.stringify(value.slice(0, 80))} is not a valid IP address` : ip.reason);
  return { address: ip.address, family: ip.family };
}

/**
 * The text a ban may be stored under: unban lifts any, even one that is not canonical or not a
 * single host. Only an address's characters (hex digits, '.', ':'), and a prefix for a range, bounded.
 */
export function storedAddress(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') throw new HttpError(400, 'an IP address is required');
  const t = value.trim();
  if (!/^[0-9A-Fa-f.:]{1,64}(\/\d{1,3})?$/.test(t)) throw new HttpError(400, `${JSON.stringify(t.slice(0, 80))} is not a valid IP address or range`);
  return t;
}

/**
 * A range to ban, canonical (parseRange), or a refusal: 400 when it is not one, 409 when it
 * would cover an allowed address or network (loopback, the AMI host, the allow list) or one of
 * this host's own networks.
 */
export function rangeTarget(d: Pick<ControlDeps, 'allow'>, value: string, local = localNetworks()): { range: string; family: Family } {
  const r = parseRange(value);
  if (!r.ok) throw new HttpError(400, `${JSON.stringify(value.slice(0, 80))}: ${r.reason}`);
  const by = d.allow.rangeConflict(r.cidr);
  if (by) throw new HttpError(409, `${r.range} covers ${by.cidr}, which is on the allow list (${by.source}); ban a range that leaves it out`);
  const own = localConflict(r.cidr, local);
  if (own) throw new HttpError(409, `${r.range} covers this host's own network ${own}; ban a range that leaves it out`);
  return { range: r.range, family: r.family };
}

/**
 * An operator's ban, answered once its row is stored. The daemon's writes wait 5 ms for a lock
 * (the event loop must not wait): one held longer by the checkpoint worker or another process
 * leaves the row pending. It is tried again every 25 ms for up to OPERATOR_LOCK_WAIT_MS (as
 * every operator write waits) before the operator hears it is not stored yet; the kernel holds
 * the ban throughout.
 */
async function banStored(d: ControlDeps, ban: () => BanResult): Promise<BanResult> {
  try {
    return ban();
  } catch (err) {
    if (!(err instanceof BanNotStoredYet)) throw err;
    for (const end = Date.now() + OPERATOR_LOCK_WAIT_MS; Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 25));
      if (d.decisions.flushWrites(true)) return err.result;
    }
    throw err;
  }
}

async function banRange(d: ControlDeps, t: { range: string; family: Family }, reason: string, forMs: number | null | undefined): Promise<ControlAnswer> {
  const t0 = performance.now();
  const res = await banStored(d, () => d.decisions.ban(t.range, t.family, { kind: reason, service: '', account: '', failures: 0 }, Date.now(), 'range', forMs));
  await res.applied;
  const appliedMs = Math.round((performance.now() - t0) * 100) / 100;
  const healthy = d.firewall.healthy;
  return { status: healthy ? 200 : 500, body: { address: res.address, family: res.family, until: res.until, banCount: res.banCount, appliedMs, kernel: healthy ? 'applied' : 'failed', ...(healthy ? {} : { error: `stored, but the kernel command failed: ${d.firewall.lastError}` }) } };
}

/** Operator text: one line, no control characters, bounded. */
export function cleanText(value: unknown, max: number): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw new HttpError(400, 'reason must be text');
  return value.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, max);
}

export function durationMs(value: unknown): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === null || value === 0) return null;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1000 || value > MAX_BAN_MS) {
    throw new HttpError(400, 'forMs must be whole milliseconds from 1000 (1s) to 100 years, or 0/null for permanent');
  }
  return value;
}

/** A paging parameter: absent, or a whole number from 1 to max. */
function pageNumber(value: string | null, name: string, max: number): number | undefined {
  if (value === null) return undefined;
  const n = /^\d{1,16}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= max)) throw new HttpError(400, `${name} must be a whole number from 1 to ${max}`);
  return n;
}

export function controlRoutes(d: ControlDeps): ControlHandler {
  const routes: Record<string, Route> = {
    'GET /status': () => ({ body: d.status() }),

    'GET /healthz': () => { const h = d.health(); return { status: h.healthy ? 200 : 503, body: h }; },

    // One page (limit, before = the previous page's next): the daemon never builds a whole listing.
    'GET /bans': (r) => {
      const limit = pageNumber(r.query.get('limit'), 'limit', MAX_PAGE);
      const before = pageNumber(r.query.get('before'), 'before', Number.MAX_SAFE_INTEGER);
      const filter = parseBanFilter((name) => r.query.get(name));
      if ('error' in filter) throw new HttpError(400, filter.error);
      try {
        return { body: null, json: listBanPageJson(d.store, Date.now(), { all: r.query.get('all') === '1', match: r.query.get('match') ?? undefined, limit, before, ...filter }) };
      } catch (err) {
        throw new HttpError(400, (err as Error).message);
      }
    },

    ...banRoutes(d),
    'GET /history': (r) => {
      const ip = hostAddress(r.query.get('address'));
      const h = historyView(d.store, ip.address, Date.now());
      h.penalty = d.penalties.failures(ip.address, Date.now());
      return { body: h };
    },

    'POST /backup': async (r) => {
      const dir = r.body.dir;
      if (dir !== undefined && (typeof dir !== 'string' || !isAbsolute(dir))) throw new HttpError(400, 'dir must be an absolute path');
      try {
        return { body: await d.backups.backupNow(dir as string | undefined) };
      } catch (err) {
        d.log.error({ err: (err as Error).message, dir }, 'backup failed');
        throw new HttpError(500, `backup failed: ${(err as Error).message}`);
      }
    },

    ...allowRoutes(d),

    'POST /reload': async () => {
      if (!d.reload) throw new HttpError(404, 'this daemon cannot reload');
      try {
        return { body: await d.reload() };
      } catch (err) {
        if (err instanceof ReloadRefused) throw new HttpError(400, err.message);
        throw err;
      }
    },
    ...importRoutes(d),
  };

  return dispatch(routes);
}

/** One handler for a table of `METHOD /path` routes: 405 for a known path, 404 otherwise. */
function dispatch(routes: Record<string, Route>): ControlHandler {
  return async (r) => {
    const route = routes[`${r.method} ${r.path}`];
    if (!route) {
      const known = Object.keys(routes).some((k) => k.endsWith(` ${r.path}`));
      throw new HttpError(known ? 405 : 404, `${known ? 'method not allowed' : 'no such route'}: ${r.method} ${r.path}`);
    }
    return route(r);
  };
}

/** `ampere ban` and `ampere unban`: in force in the kernel when answered. */
function banRoutes(d: ControlDeps): Record<string, Route> {
  return {
    'POST /ban': async (r) => {
      const forMs = durationMs(r.body.forMs);
      const reason = cleanText(r.body.reason, 200) || 'manual';
      if (typeof r.body.address === 'string' && r.body.address.includes('/')) return banRange(d, rangeTarget(d, r.body.address), reason, forMs);
      const ip = hostAddress(r.body.address);
      const by = d.allow.allowedBy(ip.address, ip.family);
      if (by) {
        const hint = by.source === 'runtime' ? 'remove it with "ampere allow rm" first' : by.source === 'config' ? 'it is in the configured allow list' : 'Ampere never bans it';
        throw new HttpError(409, `${ip.address} is on the allow list (${by.cidr}, ${by.source}); ${hint}`);
      }
      const t0 = performance.now();
      const res = await banStored(d, () => d.decisions.ban(ip.address, ip.family, { kind: reason, service: '', account: '', failures: 0 }, Date.now(), 'manual', forMs));
      d.penalties.forget(ip.address);
      await res.applied;
      const appliedMs = Math.round((performance.now() - t0) * 100) / 100;
      return {
        status: d.firewall.healthy ? 200 : 500,
        body: { address: res.address, family: res.family, until: res.until, banCount: res.banCount, appliedMs, kernel: d.firewall.healthy ? 'applied' : 'failed', ...(d.firewall.healthy ? {} : { error: `stored, but the kernel command failed: ${d.firewall.lastError}; the daemon reloads the kernel from the database` }) },
      };
    },

    'POST /unban': async (r) => {
      const t0 = performance.now();
      if (r.body.all === true) {
        const lifted = await d.decisions.unbanAll(Date.now());
        for (const a of lifted) d.penalties.forget(a);
        return { status: d.firewall.healthy ? 200 : 500, body: { unbanned: lifted, count: lifted.length, appliedMs: Math.round((performance.now() - t0) * 100) / 100, kernel: d.firewall.healthy ? 'applied' : 'failed' } };
      }
      const text = storedAddress(r.body.address);
      const address = canonicalIp(text)?.address ?? text;
      const was = await d.decisions.unban(text, Date.now(), 'unban');
      const forgot = d.penalties.forget(address);
      return { status: d.firewall.healthy ? 200 : 500, body: { address, wasBanned: was, penaltyForgotten: forgot, appliedMs: Math.round((performance.now() - t0) * 100) / 100, kernel: d.firewall.healthy ? 'applied' : 'failed' } };
    },
  };
}
