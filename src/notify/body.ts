import { formatDuration } from '../config/duration';

/** One ban or unban, as a webhook receives it. */
export interface NotifyEvent {
  action: 'ban' | 'unban';
  address: string;
  /** Why: the event kind and account for a ban (or the operator's text); unban, allowed or expired for an unban. */
  reason: string;
  /** auto, manual, legacy, fail2ban for a ban; empty for an unban. */
  source: string;
  /** Seconds the ban lasts; null when permanent or for an unban. */
  duration: number | null;
  /** How many times this address has been banned (this ban included); null for an unban. */
  count: number | null;
  /** This machine's host name. */
  host: string;
  /** When, ISO 8601. */
  at: string;
}

export type NotifyFormat = 'json' | 'slack';

export const PLACEHOLDERS = ['action', 'address', 'reason', 'source', 'duration', 'count', 'host', 'at'] as const;

const SAMPLE: NotifyEvent = { action: 'ban', address: '203.0.113.9', reason: 'InvalidPassword "x\\y', source: 'auto', duration: 3600, count: 1, host: 'pbx', at: '2026-01-01T00:00:00.000Z' };

/** One line for a person: "ampere on pbx banned 203.0.113.9 for 1h (ban 2): InvalidPassword ...". */
export function sentence(e: NotifyEvent): string {
  if (e.action === 'unban') return `ampere on ${e.host} unbanned ${e.address} (${e.reason})`;
  const span = e.duration === null ? 'permanently' : `for ${formatDuration(e.duration * 1000)}`;
  return `ampere on ${e.host} banned ${e.address} ${span} (ban ${e.count ?? 1}, ${e.source}): ${e.reason}`;
}

/**
 * Fills a template's {placeholders}. Each value is JSON-string escaped (without quotes), so a
 * template whose placeholders sit inside JSON strings stays valid JSON whatever an attacker
 * put in an account name or reason: no value can close a string or add a field.
 */
export function fillTemplate(template: string, e: NotifyEvent): string {
  return template.replace(/\{([a-z]+)\}/g, (whole, name: string) => {
    if (name === 'text') return JSON.stringify(sentence(e)).slice(1, -1);
    if (!(PLACEHOLDERS as readonly string[]).includes(name)) return whole;
    const v = e[name as keyof NotifyEvent];
    return JSON.stringify(v === null ? '' : String(v)).slice(1, -1);
  });
}

/** A template is refused at start unless, filled with a hostile sample, it is a JSON object or array. */
export function checkTemplate(template: string): string | null {
  const unknown = [...template.matchAll(/\{([a-z]+)\}/g)].map((m) => m[1]).filter((n) => n !== 'text' && !(PLACEHOLDERS as readonly string[]).includes(n));
  if (unknown.length) return `unknown placeholder {${unknown[0]}} (known: ${[...PLACEHOLDERS, 'text'].map((p) => `{${p}}`).join(' ')})`;
  try {
    const v: unknown = JSON.parse(fillTemplate(template, SAMPLE));
    if (typeof v !== 'object' || v === null) return 'the filled template is not a JSON object or array';
  } catch (err) {
    return `the filled template is not valid JSON (${(err as Error).message}); put each {placeholder} inside a JSON string`;
  }
  return null;
}

/** The request body: the event itself (json), {"text": ...} (Slack, Mattermost, Teams), or the operator's template. */
export function renderBody(e: NotifyEvent, format: NotifyFormat, template: string): string {
  if (template) return fillTemplate(template, e);
  if (format === 'slack') return JSON.stringify({ text: sentence(e) });
  return JSON.stringify(e);
}
