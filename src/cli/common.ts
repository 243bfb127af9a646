import { existsSync, readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config';
import { controlRequest, ControlUnreachable, type ControlResponse } from '../control/client';
import { controlSocketPath, statusPath } from '../control/paths';
import type { Store } from '../store';

/** Exit codes: 0 ok, 1 failure, 2 usage (bad arguments or input). */
export const EXIT = { ok: 0, fail: 1, usage: 2 } as const;

/** Ends a command with a message on stderr and an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code: number = EXIT.fail,
  ) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(message, EXIT.usage);

type Options = NonNullable<ParseArgsConfig['options']>;

/** util.parseArgs, strict, with its errors turned into usage errors naming the command. */
export function parse<O extends Options>(command: string, args: string[], options: O, positionals: { min: number; max: number; usage: string }) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(`${command}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, '')}\nusage: ampere ${positionals.usage}`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`usage: ampere ${positionals.usage}\n`);
    throw new CliError('', EXIT.ok);
  }
  const n = parsed.positionals.length;
  if (n < positionals.min || n > positionals.max) {
    throw usageError(`${command}: ${n < positionals.min ? 'missing argument' : `unexpected argument "${parsed.positionals[positionals.max]}"`}\nusage: ampere ${positionals.usage}`);
  }
  return parsed;
}

export function config(): Config {
  try {
    return loadConfig().config;
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message);
    throw err;
  }
}

/** The daemon's control socket for this configuration's database. */
export const socketOf = (cfg: Config) => controlSocketPath(cfg.db);

/** Ask the running daemon. Throws ControlUnreachable (not running, denied, timeout). */
export function ask<T = Record<string, unknown>>(cfg: Config, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, timeoutMs?: number): Promise<ControlResponse<T>> {
  return controlRequest<T>(socketOf(cfg), method, path, body, timeoutMs);
}

/** Ask, or return null when no daemon runs (the caller then reads the database itself). */
export async function askOrOffline<T = Record<string, unknown>>(cfg: Config, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, timeoutMs?: number): Promise<ControlResponse<T> | null> {
  try {
    return await ask<T>(cfg, method, path, body, timeoutMs);
  } catch (err) {
    if (err instanceof ControlUnreachable && err.reason === 'not-running') {
      const pid = runningPid(cfg);
      if (pid !== null) throw new CliError(`the daemon (pid ${pid}) seems to run but its control socket ${socketOf(cfg)} does not answer; see its log`);
      return null;
    }
    if (err instanceof ControlUnreachable) throw new CliError(err.message);
    throw err;
  }
}

/** Ask; a daemon that is not running is an error (commands that change state go through it only). */
export async function mustAsk<T = Record<string, unknown>>(cfg: Config, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, timeoutMs?: number): Promise<ControlResponse<T>> {
  try {
    return await ask<T>(cfg, method, path, body, timeoutMs);
  } catch (err) {
    if (err instanceof ControlUnreachable && err.reason === 'not-running') {
      throw new CliError(`${err.message}; start it with "ampere run" (changes take effect in the kernel and database only through the running daemon)`);
    }
    if (err instanceof ControlUnreachable) throw new CliError(err.message);
    throw err;
  }
}

/** The daemon's answer as an error: 4xx are refusals of the input (usage), others failures. */
export function refusal(res: ControlResponse): CliError {
  const msg = String((res.body as { error?: unknown }).error ?? `the daemon answered ${res.status}`);
  return new CliError(msg, res.status === 400 ? EXIT.usage : EXIT.fail);
}

/**
 * The pid of a daemon that, by its status file, is alive and wrote within 30 s; else null.
 * Guards the offline paths: nothing writes the database behind a running daemon's back.
 */
export function runningPid(cfg: Config): number | null {
  let s: { pid: number; updatedAt: number };
  try { s = JSON.parse(readFileSync(statusPath(cfg.db), 'utf8')); } catch { return null; }
  if (typeof s.pid !== 'number' || Date.now() - s.updatedAt > 30_000) return null;
  try {
    process.kill(s.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return null;
  }
  return s.pid;
}

/** Open the database directly (no daemon running). Refuses to create one unless `create`. */
export function openOffline(cfg: Config, opts: { create?: boolean } = {}): Store {
  if (!opts.create && !existsSync(cfg.db)) throw new CliError(`no database at ${cfg.db} (and no daemon running); set AMPERE_DB or start "ampere run"`);
  // Loaded here only: commands that talk to the daemon never load SQLite.
  const { Store: StoreClass } = require('../store') as typeof import('../store');
  try {
    return new StoreClass(cfg.db, cfg.history);
  } catch (err) {
    throw new CliError(`cannot open ${cfg.db}: ${(err as Error).message}`);
  }
}

/** A note on stderr (keeps stdout clean for --json). */
export const note = (text: string) => process.stderr.write(`${text}\n`);
