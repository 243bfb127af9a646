/**
 * Ampere's own jump from INPUT into its chain: every packet when `ports` is empty, else only
 * TCP and UDP to those ports (two multiport rules), so a banned office NAT keeps its other
 * services. A jump written any other way (another chain, other matches) is the operator's and
 * is respected: Ampere then adds none and changes none.
 */

/** What one multiport match takes: a port counts 1, a range 2 (the kernel's limit). */
export const PORT_UNITS_MAX = 15;

/** `ports` as given ("5060, 5061,10000:20000") to the form `iptables -S` prints, or what is allowed. */
export function parsePorts(raw: string): { ok: string } | { allowed: string } {
  const allowed = `empty for every port, or up to ${PORT_UNITS_MAX} ports and ranges (a range counts 2) such as 5060,5061,10000:20000`;
  const parts = raw.split(/[\s,]+/).filter(Boolean);
  let units = 0;
  const out: string[] = [];
  for (const part of parts) {
    const m = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(part);
    if (!m) return { allowed: `${allowed} (bad entry "${part}")` };
    const [lo, hi] = [Number(m[1]), m[2] === undefined ? undefined : Number(m[2])];
    if (lo < 1 || lo > 65535 || (hi !== undefined && (hi <= lo || hi > 65535))) return { allowed: `${allowed} (bad entry "${part}": ports are 1-65535, a range low:high)` };
    units += hi === undefined ? 1 : 2;
    out.push(hi === undefined ? String(lo) : `${lo}:${hi}`);
  }
  if (units > PORT_UNITS_MAX) return { allowed: `${allowed} (${units} given)` };
  return { ok: out.join(',') };
}

/** Ampere's jump rules as `iptables -S` prints them. */
export function ownJumps(chain: string, ports: string): string[] {
  if (!ports) return [`-A INPUT -j ${chain}`];
  return ['udp', 'tcp'].map((p) => `-A INPUT -p ${p} -m multiport --dports ${ports} -j ${chain}`);
}

/** Does this rule jump (or goto) into the chain? */
export function jumpsTo(line: string, chain: string): boolean {
  if (!line.startsWith('-A ')) return false;
  const w = line.split(/\s+/);
  return w.some((tok, i) => (tok === '-j' || tok === '-g') && w[i + 1] === chain);
}

/**
 * The jumps into the chain in an `iptables -S` listing (INPUT alone, or the whole table):
 * whether the operator placed one, which of Ampere's are missing, and which of its own
 * (written for other ports) are stale.
 */
export interface JumpState { operator: boolean; missing: string[]; stale: string[] }

export function jumpState(lines: string[], chain: string, ports: string): JumpState {
  const want = ownJumps(chain, ports);
  const own = (l: string) => l === `-A INPUT -j ${chain}` || (/^-A INPUT -p (tcp|udp) -m multiport --dports [0-9,:]+ -j (\S+)$/.exec(l)?.[2] === chain);
  const jumping = lines.filter((l) => jumpsTo(l, chain));
  const ours = jumping.filter(own);
  return { operator: jumping.length > ours.length, missing: want.filter((w) => !ours.includes(w)), stale: ours.filter((o) => !want.includes(o)) };
}

/** The chain is entered as configured, or as the operator arranged. */
export const jumpOk = (s: JumpState): boolean => s.operator || (s.missing.length === 0 && s.stale.length === 0);

/** The restore lines that make Ampere's jumps what they should be: the missing inserted at the top, the stale deleted. */
export function jumpRepair(s: JumpState): string[] {
  if (s.operator) return [];
  return [...s.missing.map((l) => `-I INPUT 1 ${l.slice('-A INPUT '.length)}`), ...s.stale.map((l) => `-D ${l.slice('-A '.length)}`)];
}
