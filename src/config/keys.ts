import { formatDuration, parseDuration } from './duration';
import { chainNameProblem } from '../firewall/names';
import { parsePorts } from '../firewall/jump';
import { SET_SIZE_DEFAULT, SET_SIZE_MAX, SET_SIZE_MIN } from '../firewall/set-size';
import { parseCidr, type Cidr } from '../net/cidr';
import { canonicalIp } from '../net/ip';
import { checkTemplate } from '../notify/body';
import { checkNotifyUrl } from '../notify/url';
import { FLEET_KEYS } from './fleet-keys';

/** A value parser returns the value (and perhaps a warning to log), or a string saying what is allowed. */
type Parse<T> = (raw: string) => { ok: T; warning?: string } | { allowed: string };

/**
 * Longest duration used as a timer's wait: a Node timer holds at most 2^31-1 ms (24.8 days),
 * and a longer one fires at once, in a loop (the daemon would never connect).
 */
export const TIMER_DURATION_MAX_MS = 24 * 86_400_000;
/**
 * Longest of every other duration (100 years): a ban's end (now + bantime_max) must stay a
 * valid Date and a safe integer, which it is with room to spare.
 */
export const DURATION_MAX_MS = 36_500 * 86_400_000;

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
const duration = (minMs: number, opts: { allowZero?: boolean; maxMs?: number } = {}): Parse<number> => (raw) => {
  const maxMs = opts.maxMs ?? DURATION_MAX_MS;
  const ms = parseDuration(raw);
  if (ms !== null && ((ms >= minMs && ms <= maxMs) || (opts.allowZero && ms === 0))) return { ok: ms };
  const why = maxMs === DURATION_MAX_MS ? '100 years' : 'the longest wait a Node timer holds';
  return { allowed: `a duration such as 90s, 10m, 1h, 7d${opts.allowZero ? ' (0 = permanent)' : ''}, from ${minMs / 1000}s to ${formatDuration(maxMs)} (${why})` };
};
const cidrList: Parse<Cidr[]> = (raw) => {
  const out: Cidr[] = [];
  const wide: string[] = [];
  for (const part of raw.split(/[\s,]+/).filter(Boolean)) {
    const c = parseCidr(part);
    if (!c) return { allowed: `comma-separated IP addresses or CIDRs (bad entry "${part}")` };
    // Every address allowed would switch protection off without a word.
    if (c.bits === 0) return { allowed: `networks narrower than /0 (${part} allows every IPv${c.family} address and would switch protection off)` };
    if (c.bits < (c.family === 4 ? 8 : 16)) wide.push(c.text);
    out.push(c);
  }
  const warning = wide.length ? `allow: ${wide.join(', ')} ${wide.length === 1 ? 'is a very wide network' : 'are very wide networks'} (wider than /8 for IPv4, /16 for IPv6): no address in it is ever banned` : undefined;
  return warning ? { ok: out, warning } : { ok: out };
};
/** `host:port` for the metrics endpoint: an IPv4 address, [IPv6] or localhost; port 1-65535. */
const listen: Parse<string> = (raw) => {
  const allowed = 'host:port such as 127.0.0.1:9327 or [::1]:9327 (an IPv4 address, an IPv6 address in brackets, or localhost; port 1-65535), or empty for off';
  if (raw === '') return { ok: raw };
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(localhost)|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[4]) : 0;
  if (!m || port < 1 || port > 65535) return { allowed };
  if (m[2]) return { ok: raw };
  const ip = canonicalIp(m[1] ?? m[3]);
  if (!ip || ip.family !== (m[1] ? 6 : 4)) return { allowed };
  if (ip.address === '0.0.0.0' || ip.address === '::') {
    return { ok: raw, warning: `metrics: ${raw} listens on every interface: the metrics and health endpoint is reachable from the network (use 127.0.0.1 or a firewall)` };
  }
  return { ok: raw };
};
/** The webhook: empty for off; its refusal never repeats the URL (it may hold a secret). */
const notifyUrl: Parse<string> = (raw) => {
  if (raw === '') return { ok: raw };
  const why = checkNotifyUrl(raw);
  return why ? { allowed: `an http:// or https:// URL, or empty for off (${why})` } : { ok: raw };
};
const notifyTemplate: Parse<string> = (raw) => {
  const why = raw === '' ? null : checkTemplate(raw);
  return why ? { allowed: `a JSON body with {placeholders} inside its strings, or empty: ${why}` } : { ok: raw };
};
/** geoip_db: empty (the bundled database), off, or a MaxMind-format file that opens and answers. */
const geoipDb: Parse<string> = (raw) => {
  if (raw === '' || raw === 'off') return { ok: raw };
  // Loaded only when a file is named: every other command starts without the reader.
  try { (require('../geoip') as typeof import('../geoip')).openCountryDb(raw); } catch (err) { return { allowed: `a MaxMind-format .mmdb file, off, or empty for the bundled one (${(err as Error).message})` }; }
  return { ok: raw };
};
const chainName: Parse<string> = (raw) => {
  const why = chainNameProblem(raw);
  return why ? { allowed: `a chain name of 1-28 letters, digits, _ . - (not starting with - or .), not a built-in chain or target of iptables: ${why}` } : { ok: raw };
};

/**
 * Every configuration key: its default (as text, parsed like any other source) and parser.
 * The original Ampere's six keys come first and keep their meaning and defaults.
 */
export const KEYS = {
  host: { default: '127.0.0.1', parse: text(/^[A-Za-z0-9.:_-]{1,253}$/, 'a host name or IP address') },
  port: { default: '5038', parse: int(1, 65535) },
  user: { default: 'ampere', parse: text(/^[^\r\n]{1,80}$/, 'a user name of 1-80 characters, no line breaks') },
  // Empty would be sent as ami-io's default password ("admin").
  pass: { default: 'ampere', parse: text(/^[^\r\n]{1,200}$/, 'a password of 1-200 characters without line breaks (not empty: AMI would get the library default)') },
  loyalty: { default: '3', parse: int(1, 1000) },
  chain: { default: 'ampere', parse: chainName },
  db: { default: '/var/lib/ampere/ampere.db', parse: text(/^[^\0]+$/, 'a file path') },
  findtime: { default: '10m', parse: duration(1000) },
  bantime: { default: '1h', parse: duration(1000, { allowZero: true }) },
  bantime_factor: { default: '4', parse: number(1, 1000) },
  bantime_max: { default: '30d', parse: duration(1000) },
  allow: { default: '', parse: cidrList },
  backend: { default: 'ipset', parse: oneOf('ipset', 'rules', 'dry-run') },
  target: { default: 'DROP', parse: upperOneOf('DROP', 'REJECT') },
  ports: { default: '', parse: parsePorts },
  set_size: { default: String(SET_SIZE_DEFAULT), parse: int(SET_SIZE_MIN, SET_SIZE_MAX) },
  iptables: { default: 'auto', parse: oneOf('auto', 'nft', 'legacy') },
  ipv6: { default: 'auto', parse: oneOf('auto', 'on', 'off') },
  ami_timeout: { default: '10s', parse: duration(200, { maxMs: TIMER_DURATION_MAX_MS }) },
  log_level: { default: 'info', parse: oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal') },
  log_format: { default: 'json', parse: oneOf('json', 'pretty') },
  max_hosts: { default: '200000', parse: int(100, 10_000_000) },
  nice: { default: '-10', parse: int(-20, 19) },
  history: { default: '20', parse: int(0, 10_000) },
  max_host_rows: { default: '100000', parse: int(1000, 10_000_000) },
  ban_history_keep: { default: '365d', parse: duration(86_400_000) },
  metrics: { default: '', parse: listen },
  backup_dir: { default: '', parse: text(/^[^\0]*$/, 'a directory path, or empty for off') },
  backup_interval: { default: '24h', parse: duration(60_000) },
  backup_keep: { default: '7', parse: int(1, 1000) },
  verify_interval: { default: '2s', parse: ((raw) => { const ms = parseDuration(raw); return ms !== null && (ms === 0 || ms >= 100) ? { ok: ms } : { allowed: 'a duration such as 2s or 500ms (at least 100ms), or 0 for off' }; }) as Parse<number> },
  geoip_db: { default: '', parse: geoipDb },
  notify_url: { default: '', parse: notifyUrl },
  notify_format: { default: 'json', parse: oneOf('json', 'slack') },
  notify_template: { default: '', parse: notifyTemplate },
  notify_timeout: { default: '5s', parse: duration(1000, { maxMs: 60_000 }) },
  ...FLEET_KEYS,
} as const;

/** Keys whose value is never shown or logged as given (it is or may hold a secret). */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['pass', 'notify_url']);

export type Key = keyof typeof KEYS;
type ParsedOf<K extends Key> = (typeof KEYS)[K]['parse'] extends Parse<infer T> ? T : never;
export type ConfigValues = { [K in Key]: ParsedOf<K> };
