import type { Config } from '../config';
import type { Fleet, FleetDeps } from '../fleet';
import type { Metrics } from '../metrics';
import { canonicalIp } from '../net/ip';

/**
 * Fleet mode, only when fleet_url is set: loaded then, so without it no fleet code and no pg
 * driver is loaded. Its hooks into the daemon: it hears of each local decision and of each
 * commit of ban rows (never awaited on the ban path), and applies peers' decisions through
 * Decisions like a local ban.
 */
export function startFleetIfSet(cfg: Config, deps: Omit<FleetDeps, 'cfg'>, metrics: Metrics | null): Fleet | null {
  if (!cfg.fleet_url) return null;
  const { startFleet } = require('../fleet') as typeof import('../fleet');
  const fleet = startFleet({ ...deps, cfg, log: deps.log.child({ module: 'fleet' }) });
  deps.decisions.onChange((what, address, detail, ban) => {
    if (detail === 'fleet' || detail === 'expired') return;
    // Published early only what the outbox would publish: a canonical single host, not a range.
    if (what === 'ban' && ban && detail !== 'range' && canonicalIp(address)?.address === address) {
      const r = ban.reason;
      fleet.noteBan({ address, until: ban.until, reasonKind: r.kind, reasonService: r.service, reasonAccount: r.account, failures: r.failures, source: detail });
      return;
    }
    if (what === 'unban') fleet.noteUnban(address, detail);
    fleet.noteLocal();
  });
  deps.decisions.onStored(() => fleet.noteLocal(0));
  if (metrics) fleet.registerMetrics(metrics.registry);
  return fleet;
}
