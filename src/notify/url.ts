/**
 * The webhook URL as it may be shown: scheme, host and port only. Webhook services keep their
 * secret in the user info, the path (Slack: /services/T/B/secret) or the query, so none of
 * those ever reaches a log line, an error or `ampere config`.
 */
export function redactUrl(raw: string): string {
  let u: URL;
  try { u = new URL(raw); } catch { return '(invalid URL)'; }
  const hidden = u.username || u.password || u.pathname.length > 1 || u.search || u.hash;
  return `${u.protocol}//${u.host}${hidden ? '/[redacted]' : '/'}`;
}

/** An http(s) URL with a host, or a reason it is not one (the reason never repeats the URL). */
export function checkNotifyUrl(raw: string): string | null {
  let u: URL;
  try { u = new URL(raw); } catch { return 'not a URL'; }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `scheme ${u.protocol} is not http: or https:`;
  if (!u.hostname) return 'no host';
  return null;
}

/** Removes every secret part of the URL from a text (an error message from the network stack). */
export function scrub(text: string, raw: string): string {
  let u: URL;
  try { u = new URL(raw); } catch { return text; }
  const secrets = [raw, u.href, u.username, u.password, u.pathname.length > 1 ? u.pathname : '', u.search, u.search.slice(1), u.hash]
    .filter((s) => s.length >= 3).sort((a, b) => b.length - a.length);
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}
