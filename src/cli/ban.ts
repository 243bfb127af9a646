import { USAGE_OF } from './usage';
import { parseDuration } from '../config/duration';
import { parseRange } from '../net/range';
import { parseHost } from '../net/ip';
import { formatSpan, formatTime, iso, printJson } from './table';
import { CliError, config, EXIT, mustAsk, parse, refusal, usageError } from './common';

const BAN_USAGE = USAGE_OF.ban;
const UNBAN_USAGE = USAGE_OF.unban;

/** One host address or a range (`203.0.113.0/24`), or a usage error saying what is wrong with it. */
export function hostArg(command: string, text: string): string {
  if (text.includes('/')) {
    const r = parseRange(text);
    if (!r.ok) throw usageError(`${command}: ${JSON.stringify(text)}: ${r.reason}`);
    return r.range;
  }
  const ip = parseHost(text);
  if (!ip.ok) throw usageError(`${command}: ${ip.reason === 'not an IP address' ? `${JSON.stringify(text)} is not a valid IP address` : ip.reason}`);
  return ip.address;
}

/**
 * What `unban` may lift: any address text a ban may have been stored under, even one that is
 * not canonical or not a single host (an older or hand-edited database: 0.0.0.0, 192.0.2.010);
 * the daemon decides. Only an address's characters: a typo is not sent as an unban.
 */
export function storedArg(command: string, text: string): string {
  const t = text.trim();
  if (!/^[0-9A-Fa-f.:]{1,64}(\/\d{1,3})?$/.test(t)) throw usageError(`${command}: ${JSON.stringify(text)} is not a valid IP address or range`);
  return t;
}

/** "1h", "7d", "90" (seconds), "permanent" or "0" -> ms (0 = permanent). */
export function banFor(text: string): number {
  if (/^(permanent|forever|0)$/i.test(text.trim())) return 0;
  const ms = parseDuration(text);
  if (ms === null || ms < 1000) throw usageError(`ban: --for ${JSON.stringify(text)} is not a duration such as 90s, 10m, 1h, 7d, or "permanent"`);
  return ms;
}

type BanBody = { address: string; until: number | null; banCount: number; appliedMs: number; kernel: string; error?: string };
type UnbanBody = { address?: string; wasBanned?: boolean; unbanned?: string[]; count?: number; appliedMs: number };

/** Errors that end the whole command (no daemon to ask): not repeated once per address. */
const unreachable = new WeakSet<Error>();
const asked = <T>(p: Promise<T>) => p.catch((err: Error) => { unreachable.add(err); throw err; });

/** One address's outcome when several are given: done, or why not (never stops the others). */
interface Outcome<T> { address: string; ok: boolean; result?: T; error?: string }

/**
 * Several addresses: each asked in turn and reported; one refused (bad text, allowed, a daemon
 * error) is reported and the others are still done; exit 1 if any failed.
 */
async function each<T>(texts: string[], json: boolean, one: (text: string) => Promise<T>, line: (r: T) => string, shape: (r: T) => object = (r) => r as object): Promise<number> {
  const outcomes: Outcome<T>[] = [];
  for (const text of texts) {
    try {
      const result = await one(text);
      outcomes.push({ address: text, ok: true, result });
      if (!json) process.stdout.write(line(result));
    } catch (err) {
      if (!(err instanceof CliError) || !err.message || unreachable.has(err)) throw err;
      outcomes.push({ address: text, ok: false, error: err.message });
      if (!json) process.stderr.write(`ampere: ${err.message}\n`);
    }
  }
  const failed = outcomes.filter((o) => !o.ok).length;
  if (json) printJson(outcomes.map((o) => (o.ok ? { ok: true, ...shape(o.result as T) } : o)));
  else if (failed) process.stderr.write(`ampere: ${failed} of ${texts.length} failed\n`);
  return failed ? EXIT.fail : EXIT.ok;
}

function banLine(b: BanBody): string {
  const until = b.until === null ? 'permanently' : `until ${formatTime(b.until)} (${formatSpan(b.until - Date.now())})`;
  return `banned ${b.address} ${until}; ban #${b.banCount} of this host; in the kernel after ${b.appliedMs} ms\n`;
}

/** `ampere ban`: in the database and the kernel before the command returns, through the daemon. */
export async function banCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('ban', args, { for: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } }, { min: 1, max: 1000, usage: BAN_USAGE });
  const forMs = values.for === undefined ? undefined : banFor(values.for);
  const cfg = config();
  const one = async (text: string) => {
    const address = hostArg('ban', text);
    const res = await asked(mustAsk<BanBody>(cfg, 'POST', '/ban', { address, forMs, reason: values.reason }));
    if (res.status !== 200) {
      if (values.json && res.status === 500 && positionals.length === 1) printJson(res.body);
      throw refusal(res);
    }
    return res.body;
  };
  if (positionals.length > 1) return each(positionals, !!values.json, one, banLine, (b) => ({ ...b, until: iso(b.until) }));
  const b = await one(positionals[0]);
  if (values.json) printJson({ ...b, until: iso(b.until) });
  else process.stdout.write(banLine(b));
  return EXIT.ok;
}

const unbanLine = (r: UnbanBody) => (r.wasBanned ? `unbanned ${r.address}; its penalty is forgotten\n` : `${r.address} was not banned; its penalty is forgotten\n`);

/** `ampere unban`: lifts the ban (database and kernel) and forgets the host's penalty. */
export async function unbanCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('unban', args, { all: { type: 'boolean' }, json: { type: 'boolean' } }, { min: 0, max: 1000, usage: UNBAN_USAGE });
  if (!!values.all === (positionals.length > 0)) throw usageError(`unban: give IP addresses or --all\nusage: ampere ${UNBAN_USAGE}`);
  const cfg = config();
  const ask = async (body: object) => {
    const res = await asked(mustAsk<UnbanBody>(cfg, 'POST', '/unban', body));
    if (res.status !== 200) {
      if (values.json && res.status === 500 && positionals.length <= 1) printJson(res.body);
      throw refusal(res);
    }
    return res.body;
  };
  if (positionals.length > 1) return each(positionals, !!values.json, (t) => ask({ address: storedArg('unban', t) }), unbanLine);
  const r = await ask(values.all ? { all: true } : { address: storedArg('unban', positionals[0]) });
  if (values.json) printJson(r);
  else if (values.all) process.stdout.write(`unbanned ${r.count} host${r.count === 1 ? '' : 's'}\n`);
  else process.stdout.write(unbanLine(r));
  return EXIT.ok;
}
