import { parseDuration } from '../config/duration';
import { parseCidr } from '../net/cidr';
import { parseHost } from '../net/ip';
import { formatSpan, formatTime, iso, printJson } from './table';
import { config, EXIT, mustAsk, parse, refusal, usageError } from './common';

const BAN_USAGE = 'ban <ip> [--for <duration>|permanent] [--reason <text>] [--json]';
const UNBAN_USAGE = 'unban <ip> | --all [--json]';

/** One host address, or a usage error saying what is wrong with it. */
export function hostArg(command: string, text: string): string {
  if (text.includes('/') && parseCidr(text)) throw usageError(`${command}: ${JSON.stringify(text)} is a network; give one IP address`);
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
  if (!/^[0-9A-Fa-f.:]{1,64}$/.test(t)) throw usageError(`${command}: ${JSON.stringify(text)} is not a valid IP address`);
  return t;
}

/** "1h", "7d", "90" (seconds), "permanent" or "0" -> ms (0 = permanent). */
export function banFor(text: string): number {
  if (/^(permanent|forever|0)$/i.test(text.trim())) return 0;
  const ms = parseDuration(text);
  if (ms === null || ms < 1000) throw usageError(`ban: --for ${JSON.stringify(text)} is not a duration such as 90s, 10m, 1h, 7d, or "permanent"`);
  return ms;
}

/** `ampere ban`: in the database and the kernel before the command returns, through the daemon. */
export async function banCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('ban', args, { for: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } }, { min: 1, max: 1, usage: BAN_USAGE });
  const address = hostArg('ban', positionals[0]);
  const forMs = values.for === undefined ? undefined : banFor(values.for);
  const cfg = config();
  const res = await mustAsk<{ address: string; until: number | null; banCount: number; appliedMs: number; kernel: string; error?: string }>(cfg, 'POST', '/ban', { address, forMs, reason: values.reason });
  if (res.status !== 200) {
    if (values.json && res.status === 500) printJson(res.body);
    throw refusal(res);
  }
  const b = res.body;
  if (values.json) printJson({ ...b, until: iso(b.until) });
  else {
    const until = b.until === null ? 'permanently' : `until ${formatTime(b.until)} (${formatSpan(b.until - Date.now())})`;
    process.stdout.write(`banned ${b.address} ${until}; ban #${b.banCount} of this host; in the kernel after ${b.appliedMs} ms\n`);
  }
  return EXIT.ok;
}

/** `ampere unban`: lifts the ban (database and kernel) and forgets the host's penalty. */
export async function unbanCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('unban', args, { all: { type: 'boolean' }, json: { type: 'boolean' } }, { min: 0, max: 1, usage: UNBAN_USAGE });
  if (!!values.all === (positionals.length === 1)) throw usageError(`unban: give one IP address or --all\nusage: ampere ${UNBAN_USAGE}`);
  const cfg = config();
  const body = values.all ? { all: true } : { address: storedArg('unban', positionals[0]) };
  const res = await mustAsk<{ address?: string; wasBanned?: boolean; unbanned?: string[]; count?: number; appliedMs: number }>(cfg, 'POST', '/unban', body);
  if (res.status !== 200) {
    if (values.json && res.status === 500) printJson(res.body);
    throw refusal(res);
  }
  const r = res.body;
  if (values.json) printJson(r);
  else if (values.all) process.stdout.write(`unbanned ${r.count} host${r.count === 1 ? '' : 's'}\n`);
  else process.stdout.write(r.wasBanned ? `unbanned ${r.address}; its penalty is forgotten\n` : `${r.address} was not banned; its penalty is forgotten\n`);
  return EXIT.ok;
}
