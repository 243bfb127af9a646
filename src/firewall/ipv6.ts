import { existsSync } from 'node:fs';

/** Whether the backends make IPv6 chains and sets, and why (the daemon logs it). */
export interface Ipv6Choice {
  on: boolean;
  reason: string;
}

/**
 * The `ipv6` setting made concrete. `auto` looks for /proc/net/if_inet6, which a kernel
 * without IPv6 (booted with ipv6.disable=1) does not have; there every ip6tables command
 * fails, so a daemon that insisted on IPv6 would not start at all.
 */
export function chooseIpv6(setting: 'auto' | 'on' | 'off', probe = '/proc/net/if_inet6'): Ipv6Choice {
  if (setting === 'on') return { on: true, reason: 'ipv6 = on' };
  if (setting === 'off') return { on: false, reason: 'ipv6 = off' };
  return existsSync(probe)
    ? { on: true, reason: `auto: ${probe} present` }
    : { on: false, reason: `auto: the kernel has no IPv6 (${probe} missing)` };
}
