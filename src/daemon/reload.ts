import type { AllowEffects, AllowList } from '../allow';
import { ConfigError, loadConfig, type Config, type LoadedConfig } from '../config';
import type { Decisions } from '../decisions';
import type { Logger } from '../log';
import type { PenaltyTable } from '../scoring';

/** Keys a reload applies to the running daemon; every other changed key waits for a restart. */
export const LIVE_KEYS = ['loyalty', 'findtime', 'bantime', 'bantime_factor', 'bantime_max', 'log_level', 'allow'] as const;

export interface ReloadResult { applied: string[]; needsRestart: string[] }

/** A reload refused: the new configuration is invalid, the old one keeps running. */
export class ReloadRefused extends Error {}

export interface ReloadDeps {
  /** The running configuration: applied keys are written into it (status shows them). */
  cfg: Config;
  penalties: PenaltyTable;
  decisions: Decisions;
  allow: AllowList;
  allowEffects: AllowEffects;
  log: Logger;
  /** The loader the start used (tests may pass another). */
  load?: () => LoadedConfig;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** The keys whose value differs between two configurations, in the order of the key table. */
export function changedKeys(old: Config, next: Config): string[] {
  return (Object.keys(next) as (keyof Config)[]).filter((k) => {
    if (k === 'allow') return !same(old.allow.map((c) => c.text), next.allow.map((c) => c.text));
    return !same(old[k], next[k]);
  });
}

/**
 * Re-reads every source as the start does; an invalid configuration is refused (the old one
 * keeps running), a valid one has its live keys applied and the others named for a restart.
 */
export function makeReload(d: ReloadDeps): () => Promise<ReloadResult> {
  let running: Promise<ReloadResult> | null = null;
  const once = async (): Promise<ReloadResult> => {
    let loaded: LoadedConfig;
    try {
      loaded = (d.load ?? loadConfig)();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      d.log.error({ key: err.key, err: err.message }, 'configuration reload refused: the running configuration stays');
      throw new ReloadRefused(err.message);
    }
    for (const w of loaded.warnings) d.log.warn(w);
    const next = loaded.config;
    const changed = changedKeys(d.cfg, next);
    const live = new Set<string>(LIVE_KEYS);
    const applied = changed.filter((k) => live.has(k));
    const needsRestart = changed.filter((k) => !live.has(k));
    await apply(d, next, applied);
    d.log.info({ applied, needsRestart }, 'configuration reloaded');
    return { applied, needsRestart };
  };
  // Two reloads at once (a signal during a request) run one after the other, never interleaved.
  return () => {
    const run = (running ?? Promise.resolve()).catch(() => undefined).then(once);
    running = run;
    return run;
  };
}

async function apply(d: ReloadDeps, next: Config, applied: string[]): Promise<void> {
  const cfg = d.cfg;
  for (const k of applied) (cfg as Record<string, unknown>)[k] = next[k as keyof Config];
  if (applied.includes('loyalty') || applied.includes('findtime')) d.penalties.configure({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime });
  if (applied.some((k) => k.startsWith('bantime'))) d.decisions.setBantime({ bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max });
  if (applied.includes('log_level')) d.log.level = cfg.log_level;
  if (applied.includes('allow')) {
    const r = await d.allow.replaceConfigured(cfg.allow, Date.now(), d.allowEffects);
    d.log.info({ added: r.added, removed: r.removed, unbanned: r.unbanned.length }, 'allow list: configured entries replaced');
  }
}
