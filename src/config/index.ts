import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import dotenv from 'dotenv';
import { KEYS, SECRET_KEYS, type ConfigValues, type Key } from './keys';
import { redactUrl } from './fleet-keys';
import { redactUrl as redactNotifyUrl } from '../notify/url';

export type Config = ConfigValues;
export { parseDuration, formatDuration } from './duration';

export const DEFAULT_CONFIG_PATH = '/etc/ampere/ampere.cfg';
/** Ampere's own directory (the checkout or /app): the only place a default .env is read from. */
const APP_DIR = resolve(__dirname, '..', '..');

/** A bad value: the message names the key, the value and what is allowed (never the password). */
export class ConfigError extends Error {
  constructor(message: string, readonly key?: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  /** Where each key's value came from: env, .env, file, default. */
  sources: Record<Key, 'env' | '.env' | 'file' | 'default'>;
  file: string | null;
  warnings: string[];
}

const envName = (key: string) => `AMPERE_${key.toUpperCase()}`;
/** Variables that are not configuration keys: where the configuration is, and the ipset loader switch (firewall/ipset-native.ts). */
const META_ENV = new Set(['AMPERE_CONFIG', 'AMPERE_ENV_FILE', 'AMPERE_IPSET_LOADER']);

/**
 * Sources, highest first: environment, a .env file (dotenv, quiet), the config file
 * (AMPERE_CONFIG, default /etc/ampere/ampere.cfg: missing is fine unless given), defaults.
 * The original ampere.cfg format (`key = value`, # comments) is what dotenv.parse reads.
 * The .env is AMPERE_ENV_FILE, else the one in Ampere's own directory (or in `dir` when
 * given), never one in whatever directory a command or service happens to start in.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, dir?: string): LoadedConfig {
  const warnings: string[] = [];
  const cwd = dir ?? process.cwd();
  const dotEnvPath = env.AMPERE_ENV_FILE !== undefined ? resolve(cwd, env.AMPERE_ENV_FILE) : join(dir ?? APP_DIR, '.env');
  const dotEnv = existsSync(dotEnvPath) ? dotenv.parse(readFileSync(dotEnvPath)) : {};
  const lookup = (name: string) => env[name] ?? dotEnv[name];

  const explicitFile = lookup('AMPERE_CONFIG') || undefined; // empty = not given
  const file = resolve(cwd, explicitFile ?? DEFAULT_CONFIG_PATH);
  let fileValues: Record<string, string> = {};
  if (existsSync(file)) {
    try {
      fileValues = dotenv.parse(readFileSync(file));
    } catch (err) {
      throw new ConfigError(`config file ${file} cannot be read: ${(err as Error).message}`, 'config');
    }
  } else if (explicitFile !== undefined) {
    throw new ConfigError(`config file ${file} (AMPERE_CONFIG) does not exist`, 'config');
  }
  for (const k of Object.keys(fileValues)) if (!(k in KEYS)) warnings.push(`unknown key "${k}" in ${file} ignored`);
  for (const name of [...Object.keys(env), ...Object.keys(dotEnv)]) {
    if (name.startsWith('AMPERE_') && !META_ENV.has(name) && !(name.slice(7).toLowerCase() in KEYS)) {
      warnings.push(`unknown variable ${name} ignored`);
    }
  }

  const config = {} as Record<Key, unknown>;
  const sources = {} as LoadedConfig['sources'];
  for (const key of Object.keys(KEYS) as Key[]) {
    let raw: string;
    // An empty variable counts as unset (compose's `${AMPERE_X:-}` passes unset keys as empty).
    if (env[envName(key)]) { raw = env[envName(key)]!; sources[key] = 'env'; }
    else if (dotEnv[envName(key)]) { raw = dotEnv[envName(key)]; sources[key] = '.env'; }
    else if (fileValues[key] !== undefined) { raw = fileValues[key]; sources[key] = 'file'; }
    else { raw = KEYS[key].default; sources[key] = 'default'; }
    const result = KEYS[key].parse(raw.trim()) as { ok: unknown; warning?: string } | { allowed: string };
    if ('allowed' in result) {
      const shown = SECRET_KEYS.has(key) ? '(hidden)' : key === 'fleet_url' ? JSON.stringify(redactUrl(raw)) : JSON.stringify(raw);
      const where = sources[key] === 'env' || sources[key] === '.env' ? `${envName(key)} (${sources[key]})` : sources[key] === 'file' ? `${key} in ${file}` : key;
      throw new ConfigError(`invalid ${key}: ${shown} from ${where}; expected ${result.allowed}`, key);
    }
    config[key] = result.ok;
    if (result.warning) warnings.push(result.warning);
  }
  const cfg = config as Config;
  if (cfg.bantime !== 0 && cfg.bantime > cfg.bantime_max) {
    throw new ConfigError(`invalid bantime: ${cfg.bantime / 1000}s is longer than bantime_max ${cfg.bantime_max / 1000}s`, 'bantime');
  }
  return { config: cfg, sources, file: existsSync(file) ? file : null, warnings };
}

/** The config as it may be logged: the password never appears. */
export function describeConfig(cfg: Config): Record<string, unknown> {
  const { pass: _pass, allow, fleet_url, notify_url, ...rest } = cfg;
  return { ...rest, allow: allow.map((c) => c.text), fleet_url: redactUrl(fleet_url), notify_url: notify_url ? redactNotifyUrl(notify_url) : '' };
}
