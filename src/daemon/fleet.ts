import type { Config } from '../config';
import type { Fleet, FleetDeps } from '../fleet';
import type { Metrics } from '../metrics';

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
  deps.decisions.onChange((_what, _address, detail) => { if (detail !== 'fleet' && detail !== 'expired') fleet.noteLocal(); });
  deps.decisions.onStored(() => fleet.noteLocal(0));
  if (metrics) fleet.registerMetrics(metrics.registry);
  return fleet;
}
