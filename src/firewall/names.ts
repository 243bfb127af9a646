/**
 * Which chain names Ampere takes, checked against iptables 1.8 (nft and legacy) and ipset 7
 * in a namespace (test/config-kernel.test.ts): both iptables flavours refuse a name of 29 or
 * more characters, one starting with '-', a built-in chain's name and a target's name; ipset
 * refuses set names over 31 characters, and each chain has sets `<chain>-v4`, `<chain>-t4`.
 * Ampere takes fewer characters than iptables does (no spaces, '!', '/', ':'), so a name is
 * also safe in a restore file, and refuses built-in and target names in any letter case.
 */
export const CHAIN_NAME_MAX = 28;

/** Built-in chains of any table, and the standard and extension targets of iptables. */
const RESERVED = new Set([
  'INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING',
  'ACCEPT', 'DROP', 'QUEUE', 'RETURN', 'AUDIT', 'CHECKSUM', 'CLASSIFY', 'CLUSTERIP', 'CONNMARK', 'CONNSECMARK', 'CT',
  'DNAT', 'DNPT', 'DSCP', 'ECN', 'HL', 'HMARK', 'IDLETIMER', 'LED', 'LOG', 'MARK', 'MASQUERADE', 'NAT', 'NETMAP',
  'NFLOG', 'NFQUEUE', 'NOTRACK', 'RATEEST', 'REDIRECT', 'REJECT', 'SECMARK', 'SET', 'SNAT', 'SNPT', 'SYNPROXY',
  'TCPMSS', 'TCPOPTSTRIP', 'TEE', 'TOS', 'TPROXY', 'TRACE', 'TTL', 'ULOG',
]);

/** Why a chain name cannot be used, or null when it can. */
export function chainNameProblem(chain: string): string | null {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(chain)) return 'letters, digits, _ . - only, not starting with - or .';
  if (chain.length > CHAIN_NAME_MAX) return `at most ${CHAIN_NAME_MAX} characters (iptables; its ipset sets <chain>-v4 and <chain>-v6 then stay within ipset's 31)`;
  if (RESERVED.has(chain.toUpperCase())) return `${chain} is the name of a built-in chain or target of iptables`;
  return null;
}
