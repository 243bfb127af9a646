import { notSingleHost, parseHost, type Family } from '../net/ip';
import type { ParseResult, SecurityEvent } from './types';

/** Severity of each known security event, from Asterisk's security_events_defs.h. */
export const KNOWN_SEVERITY: Record<string, 'Error' | 'Informational'> = {
  FailedACL: 'Error',
  InvalidAccountID: 'Error',
  SessionLimit: 'Error',
  MemoryLimit: 'Error',
  LoadAverageLimit: 'Error',
  RequestNotSupported: 'Error',
  RequestNotAllowed: 'Error',
  AuthMethodNotAllowed: 'Error',
  RequestBadFormat: 'Error',
  SuccessfulAuth: 'Informational',
  UnexpectedAddress: 'Error',
  ChallengeResponseFailed: 'Error',
  InvalidPassword: 'Error',
  ChallengeSent: 'Informational',
  InvalidTransport: 'Error',
};

const SECURITY_PRIVILEGE = /(^|,)security(,|$)/;
const TRANSPORTS = new Set(['UDP', 'TCP', 'TLS', 'WS', 'WSS', 'SCTP']);
const MAX_ACCOUNT = 255;
const MAX_KIND = 64;

/** A dotted quad exactly as canonicalIp() would print it: no leading zeros, each part 0-255. */
const CANONICAL_V4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const PORT = /^\d{1,5}$/;

/**
 * The same text, not tied to the string it was cut from. V8 makes substrings of 13 characters
 * or more ("198.51.100.200", "Informational") views into their source, which here is a whole
 * AMI chunk of up to 64 KB: an event waiting in the history batch, or an address kept in the
 * penalty table, would pin its chunk in memory. (' ' + s).slice(1) is V8's cheapest copy:
 * the concatenation is flattened into a new string and the slice is a view of that.
 */
const own = (s: string) => (s.length < 13 ? s : (' ' + s).slice(1));

/** Known event names as the module's own strings (no copy needed); a Map, so `constructor` is not a kind. */
const KINDS = new Map(Object.keys(KNOWN_SEVERITY).map((k) => [k, k]));
const SEVERITY = new Map(Object.entries(KNOWN_SEVERITY));

/** Upper case without a new string when it already is (Asterisk always sends IPV4, UDP, ...). */
const upper = (s: string, a: string, b: string) => (s === a || s === b ? s : s.toUpperCase());

/**
 * `IPV4/UDP/10.0.0.1/5060`, `IPV6/TCP/fd99::2/5060`, `IPV4/10.0.0.1/5060` (transport left out
 * when unknown), IPv6 with or without brackets or %scope. Null when the address is not an IP.
 * Runs for every event: an already canonical IPv4 address (what Asterisk sends) skips the
 * general parseHost(), which would return it unchanged. An address that cannot be a single
 * host (0.0.0.0, ::, multicast, broadcast, class E) or whose text is of the other family gives null.
 */
export function parseRemoteAddress(text: string): { address: string; family: Family; transport: string | null; port: number | null } | null {
  const parts = text.trim().split('/');
  if (parts.length < 2 || parts.length > 4) return null;
  const fam = upper(parts[0], 'IPV4', 'IPV6');
  if (fam !== 'IPV4' && fam !== 'IPV6') return null;
  let i = 1;
  let transport: string | null = null;
  const t = upper(parts[1], 'UDP', 'TCP');
  if (TRANSPORTS.has(t)) { transport = t; i++; }
  const raw = parts[i++] ?? '';
  // Only a single remote host of the claimed family may come out (see parseHost).
  let ip: { address: string; family: Family };
  if (fam === 'IPV4' && CANONICAL_V4.test(raw)) {
    if (notSingleHost(raw, 4) !== null) return null;
    ip = { address: own(raw), family: 4 };
  } else {
    const h = parseHost(raw, fam === 'IPV4' ? 4 : 6);
    if (!h.ok) return null;
    ip = h;
  }
  let port: number | null = null;
  if (i < parts.length) {
    port = PORT.test(parts[i]) ? Number(parts[i]) : NaN;
    if (!(port >= 0 && port <= 65535)) return null;
    i++;
  }
  if (i !== parts.length) return null;
  return { address: ip.address, family: ip.family, transport, port };
}

/** Control, format (bidi overrides, zero-width) and line/paragraph separators: never in a log, a row or a terminal. */
const UNSAFE = /[\p{Cc}\p{Cf}\u2028\u2029]/u;
const UNSAFE_ALL = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/** Text from an event with every UNSAFE character removed, cut to max characters. */
export function cleanText(text: string | undefined, max: number): string {
  if (!text) return '';
  const clean = UNSAFE.test(text) ? text.replace(UNSAFE_ALL, '') : text;
  return clean.length > max ? clean.slice(0, max) : clean;
}

/** AccountID is the attacker's own text: drop unsafe characters and cut it short. */
export function sanitizeAccount(text: string | undefined): string {
  return cleanText(text, MAX_ACCOUNT);
}

/**
 * A raw AMI message (keys lower-cased, as the AMI layer hands them over) to a typed event.
 * Unknown events and fields are tolerated; order does not matter.
 */
export function toSecurityEvent(fields: Record<string, string | undefined>): ParseResult {
  const kind = fields.event;
  if (!kind) return { ok: false, ignored: true, reason: 'no Event header' };
  const name = KINDS.get(kind) ?? cleanText(kind, MAX_KIND);
  const privilege = fields.privilege ?? '';
  const known = SEVERITY.get(kind);
  if (!known && !SECURITY_PRIVILEGE.test(privilege)) return { ok: false, ignored: true, reason: `not a security event: ${name.slice(0, 40)}` };
  const severity = fields.severity === 'Error' ? 'Error' : fields.severity === 'Informational' ? 'Informational' : known;
  if (!name) return { ok: false, ignored: false, reason: 'security event whose Event header is only unsafe characters' };
  if (!severity) return { ok: false, ignored: false, reason: `security event ${name.slice(0, 40)} without a known Severity` };
  const remote = fields.remoteaddress;
  if (!remote) return { ok: false, ignored: false, reason: `${name.slice(0, 40)} without RemoteAddress` };
  const addr = parseRemoteAddress(remote);
  if (!addr) return { ok: false, ignored: false, reason: `${name.slice(0, 40)} with unreadable RemoteAddress ${JSON.stringify(remote.slice(0, 80))}` };
  // Every string kept is its own copy (see own()): events wait in the history batch.
  const event: SecurityEvent = {
    kind: KINDS.has(name) ? name : own(name),
    severity,
    service: own(cleanText(fields.service, 16)),
    address: addr.address,
    family: addr.family,
    transport: addr.transport,
    port: addr.port,
    account: own(sanitizeAccount(fields.accountid)),
    sessionId: own(cleanText(fields.sessionid, 128)),
  };
  return { ok: true, event };
}
