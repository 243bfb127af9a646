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
  return {
    // At most MAX_IMPORT_ENTRIES a request (the CLI sends a large import in several), applied
    // in chunks that wait for the kernel and yield, so bans and events go on meanwhile.
    'POST /import-legacy': async (r) => {
      const entries = r.body.entries;
      if (!Array.isArray(entries)) throw new HttpError(400, 'entries must be a list of {address, account}');
      if (entries.length > MAX_IMPORT_ENTRIES) throw new HttpError(413, `at most ${MAX_IMPORT_ENTRIES} entries a request: send a larger import in several`);
      const forMs = durationMs(r.body.forMs);
      const now = Date.now();
      const t0 = performance.now();
      const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
      for (let i = 0; i < entries.length; i += CHUNK) {
        const applied: Promise<void>[] = [];
        const part = applyLegacy(entries.slice(i, i + CHUNK) as LegacyEntry[], {
          allowed: (a) => d.allow.refusal(a, 4),
          isBanned: (a) => d.decisions.isBanned(a),
          ban: (e) => { applied.push(kernelBan(() => d.decisions.ban(e.address, 4, { kind: 'legacy', service: '', account: e.account, failures: 0 }, now, 'legacy', forMs ?? null))); },
        });
        for (const k of ['imported', 'alreadyBanned', 'refused'] as const) for (const x of part[k]) (report[k] as unknown[]).push(x);
        await Promise.all(applied);
        await new Promise<void>((res) => setImmediate(res));
      }
      d.log.info({ imported: report.imported.length, alreadyBanned: report.alreadyBanned.length, refused: report.refused.length }, 'legacy bans imported');
      return { status: d.firewall.healthy ? 200 : 500, body: { ...report, appliedMs: Math.round(performance.now() - t0), kernel: d.firewall.healthy ? 'applied' : 'failed' } };
    },

    'POST /import-fail2ban': async (r) => {
      const entries = r.body.entries;
      if (!Array.isArray(entries)) throw new HttpError(400, 'entries must be a list of {address, until, jail}');
      if (entries.length > MAX_IMPORT_ENTRIES) throw new HttpError(413, `at most ${MAX_IMPORT_ENTRIES} entries a request: send a larger import in several`);
      const t0 = performance.now();
      const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
      for (let i = 0; i < entries.length; i += CHUNK) {
        const now = Date.now();
        const applied: Promise<void>[] = [];
        const part = applyImportBans(entries.slice(i, i + CHUNK) as ImportBan[], {
          allowed: (a, f) => d.allow.refusal(a, f),
          isBanned: (a) => d.decisions.isBanned(a),
          ban: (a, f, forMs, jail) => { applied.push(kernelBan(() => d.decisions.ban(a, f, { kind: 'fail2ban', service: jail, account: '', failures: 0 }, now, 'fail2ban', forMs))); },
        }, now);
        for (const k of ['imported', 'alreadyBanned', 'refused'] as const) for (const x of part[k]) (report[k] as unknown[]).push(x);
        await Promise.all(applied);
        await new Promise<void>((res) => setImmediate(res));
      }
      d.log.info({ imported: report.imported.length, alreadyBanned: report.alreadyBanned.length, refused: report.refused.length }, 'fail2ban bans imported');
      return { status: d.firewall.healthy ? 200 : 500, body: { ...report, appliedMs: Math.round(performance.now() - t0), kernel: d.firewall.healthy ? 'applied' : 'failed' } };
    },
  };
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
