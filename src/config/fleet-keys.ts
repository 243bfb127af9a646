import { hostname } from 'node:os';
import { parseDuration, formatDuration } from './duration';

/** A value parser as keys.ts has it: the value, or what is allowed. */
type Parse<T> = (raw: string) => { ok: T; warning?: string } | { allowed: string };

/** The fleet URL with its password replaced: the only form of it that may reach a log line or an error. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '*****';
    return u.toString();
  } catch {
    // Unparseable: nothing of it is shown, it may hold a password anywhere.
    return raw === '' ? '' : '(unparseable URL hidden)';
  }
}

const fleetUrl: Parse<string> = (raw) => {
  if (raw === '') return { ok: raw };
  const allowed = 'a PostgreSQL URL such as postgres://pbx1:secret@db.example:5432/ampere?sslmode=verify-full, or empty for no fleet';
  let u: URL;
  try { u = new URL(raw); } catch { return { allowed }; }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') return { allowed };
  // A Unix socket directory may come as ?host=/run/postgresql instead of a host name.
  if (!u.hostname && !u.searchParams.get('host')) return { allowed };
  if (u.pathname.length <= 1) return { allowed: `${allowed} (the database name is missing)` };
  return { ok: raw };
};

/** The node's name in the fleet: also its database role (row-level security compares the two). Empty: this host's short name. */
const origin: Parse<string> = (raw) => {
  const name = raw === '' ? hostname().split('.')[0] : raw;
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)
    ? { ok: name }
    : { allowed: `a node name of 1-63 letters, digits, . _ - (starting with a letter or digit): the database role of this node${raw === '' ? ` (the host name ${JSON.stringify(name.slice(0, 80))} is not one: set it)` : ''}` };
};

const path: Parse<string> = (raw) => (/^[^\0]*$/.test(raw) ? { ok: raw } : { allowed: 'a file path, or empty' });

const rate: Parse<number> = (raw) => {
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  return n >= 1 && n <= 1_000_000 ? { ok: n } : { allowed: 'decisions per second, a whole number from 1 to 1000000' };
};

const span = (minMs: number, maxMs: number): Parse<number> => (raw) => {
  const ms = parseDuration(raw);
  return ms !== null && ms >= minMs && ms <= maxMs ? { ok: ms } : { allowed: `a duration such as 30s, 10m, 24h, from ${formatDuration(minMs)} to ${formatDuration(maxMs)}` };
};

/** Fleet mode's keys (docs/fleet.md); every one is inert while fleet_url is empty. */
export const FLEET_KEYS = {
  fleet_url: { default: '', parse: fleetUrl },
  fleet_origin: { default: '', parse: origin },
  fleet_resync: { default: '30s', parse: span(1000, 24 * 86_400_000) },
  fleet_ban_max: { default: '24h', parse: span(1000, 36_500 * 86_400_000) },
  fleet_tls_ca: { default: '', parse: path },
  fleet_tls_cert: { default: '', parse: path },
  fleet_tls_key: { default: '', parse: path },
  fleet_publish_rate: { default: '200', parse: rate },
  fleet_receive_rate: { default: '400', parse: rate },
} as const;
