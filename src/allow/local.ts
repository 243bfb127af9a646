import { networkInterfaces } from 'node:os';
import { parseCidr, type Cidr } from '../net/cidr';
import { overlaps } from '../net/range';

/**
 * This host's own networks (each interface's address with its prefix): a range ban that
 * covers one would cut the host off from its own LAN, its trunks' gateway, or itself.
 */
export function localNetworks(read = networkInterfaces): { cidr: Cidr; name: string }[] {
  const out: { cidr: Cidr; name: string }[] = [];
  for (const [name, addrs] of Object.entries(read())) {
    for (const a of addrs ?? []) {
      const c = a.cidr ? parseCidr(a.cidr) : null;
      if (c) out.push({ cidr: c, name });
    }
  }
  return out;
}

/** The first of this host's networks the range overlaps ("10.0.0.0/24 on eth0"), if any. */
export function localConflict(range: Cidr, networks = localNetworks()): string | undefined {
  const n = networks.find((x) => overlaps(x.cidr, range));
  return n ? `${n.cidr.text} on ${n.name}` : undefined;
}
