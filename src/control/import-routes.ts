import { BanNotStoredYet, type BanResult } from '../decisions';
import { applyImportBans, type ImportBan } from '../fail2ban/apply';
import { applyLegacy, MAX_IMPORT_ENTRIES, type ImportReport } from '../legacy/import';
import type { LegacyEntry } from '../legacy';
import { durationMs, type ControlDeps } from './routes';
import { HttpError, type ControlAnswer, type ControlRequest } from './server';

/** Entries applied before yielding to the event loop (bans and events go on meanwhile). */
const CHUNK = 500;

/** `POST /import-legacy` and `POST /import-fail2ban`: bans from the original's and fail2ban's databases, in force in the kernel when answered. */
export function importRoutes(d: ControlDeps): Record<string, (r: ControlRequest) => Promise<ControlAnswer>> {
  const allowed = (a: string, f: 4 | 6) => d.allow.refusal(a, f);
  const isBanned = (a: string) => d.decisions.isBanned(a);
  return {
    'POST /import-legacy': async (r) => {
      const entries = listOf(r.body.entries, 'entries must be a list of {address, account}');
      const forMs = durationMs(r.body.forMs);
      return applyInChunks(d, 'legacy', entries as LegacyEntry[], (part, now, push) => applyLegacy(part, {
        allowed: (a) => allowed(a, 4), isBanned,
        ban: (e) => push(() => d.decisions.ban(e.address, 4, { kind: 'legacy', service: '', account: e.account, failures: 0 }, now, 'legacy', forMs ?? null)),
      }));
    },
    'POST /import-fail2ban': async (r) => {
      const entries = listOf(r.body.entries, 'entries must be a list of {address, until, jail}');
      return applyInChunks(d, 'fail2ban', entries as ImportBan[], (part, now, push) => applyImportBans(part, {
        allowed, isBanned,
        ban: (a, f, forMs, jail) => push(() => d.decisions.ban(a, f, { kind: 'fail2ban', service: jail, account: '', failures: 0 }, now, 'fail2ban', forMs)),
      }, now));
    },
  };
}

/** At most MAX_IMPORT_ENTRIES a request: the CLI sends a larger import in several. */
function listOf(entries: unknown, what: string): unknown[] {
  if (!Array.isArray(entries)) throw new HttpError(400, what);
  if (entries.length > MAX_IMPORT_ENTRIES) throw new HttpError(413, `at most ${MAX_IMPORT_ENTRIES} entries a request: send a larger import in several`);
  return entries;
}

type ApplyPart<T> = (part: T[], now: number, push: (ban: () => BanResult) => void) => ImportReport;

/**
 * Applied in chunks that wait for the kernel and yield, so bans and events go on meanwhile;
 * answered once every imported ban is in the kernel.
 */
async function applyInChunks<T>(d: ControlDeps, source: string, entries: T[], apply: ApplyPart<T>): Promise<ControlAnswer> {
  const t0 = performance.now();
  const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
  for (let i = 0; i < entries.length; i += CHUNK) {
    const applied: Promise<void>[] = [];
    const part = apply(entries.slice(i, i + CHUNK), Date.now(), (ban) => applied.push(kernelBan(ban)));
    for (const k of ['imported', 'alreadyBanned', 'refused'] as const) for (const x of part[k]) (report[k] as unknown[]).push(x);
    await Promise.all(applied);
    await new Promise<void>((res) => setImmediate(res));
  }
  d.log.info({ imported: report.imported.length, alreadyBanned: report.alreadyBanned.length, refused: report.refused.length }, `${source} bans imported`);
  const healthy = d.firewall.healthy;
  return { status: healthy ? 200 : 500, body: { ...report, appliedMs: Math.round(performance.now() - t0), kernel: healthy ? 'applied' : 'failed' } };
}

/**
 * An imported ban counts once the kernel has it: a row that meets a locked database stays
 * pending and is retried by Decisions, so it must not fail the rest of the import.
 */
export function kernelBan(ban: () => BanResult): Promise<void> {
  try {
    return ban().applied;
  } catch (err) {
    if (err instanceof BanNotStoredYet) return err.result.applied;
    throw err;
  }
}
