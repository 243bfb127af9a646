import type { AllowEffects, AllowList } from '../allow';
import { ConfigError, loadConfig, type Config, type LoadedConfig } from '../config';
import type { Decisions } from '../decisions';
import type { FirewallBackend } from '../firewall';
import type { Logger } from '../log';
import type { PenaltyTable } from '../scoring';

/**
 * Keys a reload applies to the running daemon; every other changed key waits for a restart.
 * `metrics` only moves: turning the endpoint on or off needs a restart (its counters start with the daemon).
 */
export const LIVE_KEYS = [
  'loyalty', 'findtime', 'bantime', 'bantime_factor', 'bantime_max', 'log_level', 'allow', 'backup_dir', 'backup_interval', 'backup_keep', 'metrics', 'target', 'set_size',
] as const;

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
  /** The backup schedule (backup_dir, backup_interval, backup_keep). */
  backups?: { reconfigure(o: { dir: string | null; intervalMs: number; keep: number }): void };
  /** Moves the metrics endpoint to a new address; false (the old one kept) when it cannot listen there. */
  moveMetrics?: (listen: string) => Promise<boolean>;
  /**
   * Rewrites Ampere's rules and sets in one full load from the database: a new target (DROP
   * or REJECT) for the rules, a new set_size for the sets of hosts (swapped in with every ban).
   */
  rebuild?: (change: { target?: Config['target']; setSize?: number }) => Promise<void>;
  /** The loader the start used (tests may pass another). */
  load?: () => LoadedConfig;
}

/** ReloadDeps.rebuild: the backend takes the new target and set size, and the decisions load every ban again (through the queue). */
export function rebuildFirewall(backend: Pick<FirewallBackend, 'setTarget' | 'setSetSize'>, decisions: Pick<Decisions, 'resync'>): NonNullable<ReloadDeps['rebuild']> {
  return async ({ target, setSize }) => {
    if (target) backend.setTarget(target);
    if (setSize) backend.setSetSize(setSize);
    await decisions.resync(Date.now());
  };
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
    const live = (k: string) => (LIVE_KEYS as readonly string[]).includes(k) && (k !== 'metrics' || (d.cfg.metrics !== '' && next.metrics !== ''));
    const needsRestart = changed.filter((k) => !live(k));
    const applied = await apply(d, next, changed.filter(live));
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

/** Applies the live keys; returns those applied (a metrics address that cannot listen is not). */
async function apply(d: ReloadDeps, next: Config, keys: string[]): Promise<string[]> {
  const cfg = d.cfg;
  const has = (k: string) => keys.includes(k);
  let moved = false;
  if (has('metrics')) {
    moved = d.moveMetrics !== undefined && (await d.moveMetrics(next.metrics));
    if (!moved) d.log.error({ listen: next.metrics, still: cfg.metrics }, 'metrics endpoint not moved: it stays where it was');
  }
  const applied = keys.filter((k) => k !== 'metrics' || moved);
  for (const k of applied) (cfg as Record<string, unknown>)[k] = next[k as keyof Config];
  if (has('loyalty') || has('findtime')) d.penalties.configure({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime });
  if (applied.some((k) => k.startsWith('bantime'))) d.decisions.setBantime({ bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max });
  if (has('log_level')) d.log.level = cfg.log_level;
  if (applied.some((k) => k.startsWith('backup_'))) d.backups?.reconfigure({ dir: cfg.backup_dir || null, intervalMs: cfg.backup_interval, keep: cfg.backup_keep });
  if (has('target') || has('set_size')) await d.rebuild?.({ ...(has('target') ? { target: cfg.target } : {}), ...(has('set_size') ? { setSize: cfg.set_size } : {}) });
  if (has('allow')) {
    const r = await d.allow.replaceConfigured(cfg.allow, Date.now(), d.allowEffects);
    d.log.info({ added: r.added, removed: r.removed, unbanned: r.unbanned.length }, 'allow list: configured entries replaced');
  }
  return applied;
}
