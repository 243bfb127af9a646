import { parseDuration } from './duration';
import { parseCidr, type Cidr } from '../net/cidr';

/** A value parser returns the value, or a string saying what is allowed. */
type Parse<T> = (raw: string) => { ok: T } | { allowed: string };

const text = (re: RegExp, allowed: string): Parse<string> => (raw) => (re.test(raw) ? { ok: raw } : { allowed });
const oneOf = <T extends string>(...values: T[]): Parse<T> => (raw) => {
  const v = raw.toLowerCase() as T;
  return values.includes(v) ? { ok: v } : { allowed: `one of ${values.join(', ')}` };
};
const upperOneOf = <T extends string>(...values: T[]): Parse<T> => (raw) => {
  const v = raw.toUpperCase() as T;
  return values.includes(v) ? { ok: v } : { allowed: `one of ${values.join(', ')}` };
};
const int = (min: number, max: number): Parse<number> => (raw) => {
  const n = /^-?\d+$/.test(raw) ? Number(raw) : NaN;
  return n >= min && n <= max ? { ok: n } : { allowed: `a whole number from ${min} to ${max}` };
};
const number = (min: number, max: number): Parse<number> => (raw) => {
  const n = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
  return n >= min && n <= max ? { ok: n } : { allowed: `a number from ${min} to ${max}` };
};
const duration = (minMs: number, allowZero = false): Parse<number> => (raw) => {
  const ms = parseDuration(raw);
  if (ms !== null && (ms >= minMs || (allowZero && ms === 0))) return { ok: ms };
  return { allowed: `a duration such as 90s, 10m, 1h, 7d${allowZero ? ' (0 = permanent)' : ''}, at least ${minMs / 1000}s` };
};
const cidrList: Parse<Cidr[]> = (raw) => {
  const out: Cidr[] = [];
  for (const part of raw.split(/[\s,]+/).filter(Boolean)) {
    const c = parseCidr(part);
    if (!c) return { allowed: `comma-separated IP addresses or CIDRs (bad entry "${part}")` };
    out.push(c);
  }
  return { ok: out };
};
const listen: Parse<string> = (raw) =>
  raw === '' || /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):\d{1,5}$/.test(raw)
    ? { ok: raw }
    : { allowed: 'host:port such as 127.0.0.1:9327, or empty for off' };

/**
 * Every configuration key: its default (as text, parsed like any other source) and parser.
 * The original Ampere's six keys come first and keep their meaning and defaults.
 */
export const KEYS = {
  host: { default: '127.0.0.1', parse: text(/^[A-Za-z0-9.:_-]{1,253}$/, 'a host name or IP address') },
  port: { default: '5038', parse: int(1, 65535) },
  user: { default: 'ampere', parse: text(/^[^\r\n]{1,80}$/, 'a user name of 1-80 characters, no line breaks') },
  pass: { default: 'ampere', parse: text(/^[^\r\n]{0,200}$/, 'a password without line breaks') },
  loyalty: { default: '3', parse: int(1, 1000) },
  chain: { default: 'ampere', parse: text(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}$/, 'a chain name of 1-28 letters, digits, _ . - (not starting with -)') },
  db: { default: '/var/lib/ampere/ampere.db', parse: text(/^[^\0]+$/, 'a file path') },
  findtime: { default: '10m', parse: duration(1000) },
  bantime: { default: '1h', parse: duration(1000, true) },
  bantime_factor: { default: '4', parse: number(1, 1000) },
  bantime_max: { default: '30d', parse: duration(1000) },
  allow: { default: '', parse: cidrList },
  backend: { default: 'ipset', parse: oneOf('ipset', 'rules', 'dry-run') },
  target: { default: 'DROP', parse: upperOneOf('DROP', 'REJECT') },
  iptables: { default: 'auto', parse: oneOf('auto', 'nft', 'legacy') },
  ipv6: { default: 'auto', parse: oneOf('auto', 'on', 'off') },
  ami_timeout: { default: '10s', parse: duration(200) },
  log_level: { default: 'info', parse: oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal') },
  max_hosts: { default: '200000', parse: int(100, 10_000_000) },
  nice: { default: '-10', parse: int(-20, 19) },
  history: { default: '20', parse: int(0, 10_000) },
  metrics: { default: '', parse: listen },
  backup_dir: { default: '', parse: text(/^[^\0]*$/, 'a directory path, or empty for off') },
  backup_interval: { default: '24h', parse: duration(60_000) },
  backup_keep: { default: '7', parse: int(1, 1000) },
  verify_interval: { default: '2s', parse: ((raw) => { const ms = parseDuration(raw); return ms !== null && (ms === 0 || ms >= 100) ? { ok: ms } : { allowed: 'a duration such as 2s or 500ms (at least 100ms), or 0 for off' }; }) as Parse<number> },
} as const;

export type Key = keyof typeof KEYS;
type ParsedOf<K extends Key> = (typeof KEYS)[K]['parse'] extends Parse<infer T> ? T : never;
export type ConfigValues = { [K in Key]: ParsedOf<K> };
