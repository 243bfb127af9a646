import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../log';

/** What the metrics read from the running daemon when scraped. */
export interface MetricsSources {
  activeBans(): { v4: number; v6: number };
  trackedHosts(): number;
  amiConnected(): boolean;
  amiReconnects(): number;
  amiMalformed(): number;
  amiMerged(): number;
  amiDistrusted(): number;
  firewallInSync(): boolean;
  /** Ban rows not stored yet, and failed database writes since start (optional: older callers). */
  pendingBanWrites?(): number;
  storeWriteFailures?(): number;
  /** Processes started for firewall commands since start (optional: older callers). */
  firewallProcesses?(): number;
  /** Bans left out of the kernel because their ipset set was full (optional: older callers). */
  firewallSetFull?(): number;
  /** The webhook's counts since start; null without notify_url. */
  notify?(): { queued: number; delivered: number; failed: number; dropped: number } | null;
}

/** Seconds from the deciding AMI event's arrival to the ban being in the kernel. */
export const REACTION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Ampere's Prometheus metrics on a registry of its own. The per-event path only bumps a Map
 * entry; the counters are brought up to date when scraped.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly eventCounts = new Map<string, number>(); // `${kind}\n${service}` -> n
  private readonly bans: Counter<'source'>;
  private readonly unbans: Counter<'reason'>;
  private readonly firewallFailures: Counter<'op'>;
  private readonly firewallRepairs: Counter<'what'>;
  readonly reaction: Histogram;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    const seen = new Map<string, number>();
    const counts = this.eventCounts;
    new Counter({
      name: 'ampere_events_total', help: 'AMI security events received, by event kind and Asterisk service.', labelNames: ['kind', 'service'], registers,
      collect() {
        for (const [key, n] of counts) {
          const delta = n - (seen.get(key) ?? 0);
          if (delta <= 0) continue;
          seen.set(key, n);
          const [kind, service] = key.split('\n');
          this.inc({ kind, service }, delta);
        }
      },
    });
    this.bans = new Counter({ name: 'ampere_bans_total', help: 'Bans made, by source (auto, manual, legacy).', labelNames: ['source'], registers });
    this.unbans = new Counter({ name: 'ampere_unbans_total', help: 'Bans lifted, by reason (expired, unban, allowed).', labelNames: ['reason'], registers });
    new Gauge({
      name: 'ampere_active_bans', help: 'Bans in force, by address family.', labelNames: ['family'], registers,
      collect() { const b = src.activeBans(); this.set({ family: 'ipv4' }, b.v4); this.set({ family: 'ipv6' }, b.v6); },
    });
    new Gauge({ name: 'ampere_pending_ban_writes', help: 'Bans in the kernel whose database row is not written yet (retried).', registers, collect() { this.set(src.pendingBanWrites?.() ?? 0); } });
    let lastStoreFailures = 0;
    new Counter({
      name: 'ampere_store_write_failures_total', help: 'Database writes that failed (bans, expiry, history); each is retried.', registers,
      collect() { const n = src.storeWriteFailures?.() ?? 0; if (n > lastStoreFailures) { this.inc(n - lastStoreFailures); lastStoreFailures = n; } },
    });
    new Gauge({ name: 'ampere_tracked_hosts', help: 'Hosts with a penalty being tracked in memory.', registers, collect() { this.set(src.trackedHosts()); } });
    new Gauge({ name: 'ampere_ami_connected', help: '1 when logged in to the Asterisk Manager Interface.', registers, collect() { this.set(src.amiConnected() ? 1 : 0); } });
    let lastReconnects = 0;
    new Counter({
      name: 'ampere_ami_reconnects_total', help: 'Reconnection attempts to AMI.', registers,
      collect() { const n = src.amiReconnects(); if (n > lastReconnects) { this.inc(n - lastReconnects); lastReconnects = n; } },
    });
    monotonic('ampere_ami_malformed_total', 'AMI messages skipped because they could not be read (the session goes on).', src.amiMalformed, registers);
    monotonic('ampere_ami_distrusted_total', 'AMI SuccessfulAuth events dropped as forged inside another event (no UsingPassword after RemoteAddress).', src.amiDistrusted, registers);
    monotonic('ampere_ami_merged_total', 'AMI blocks merged back into a security event that injected blank lines had cut.', src.amiMerged, registers);
    new Gauge({ name: 'ampere_firewall_in_sync', help: '1 when every kernel command since the last full load succeeded and the last check found the kernel as Ampere made it.', registers, collect() { this.set(src.firewallInSync() ? 1 : 0); } });
    monotonic('ampere_firewall_processes_total', 'Processes started for firewall commands (iptables, ipset, conntrack); bans through the live ipset shell start none.', () => src.firewallProcesses?.() ?? 0, registers);
    monotonic('ampere_firewall_set_full_total', 'Bans left out of the kernel because their ipset set was full (set_size); each full load counts those it leaves out again.', () => src.firewallSetFull?.() ?? 0, registers);
    this.firewallFailures = new Counter({ name: 'ampere_firewall_command_failures_total', help: 'Failed firewall commands (batches), by operation.', labelNames: ['op'], registers });
    this.firewallRepairs = new Counter({
      name: 'ampere_firewall_repairs_total', help: 'Kernel reloads after the check found drift, by what drifted (jump, chain, rules, set, entries, failed-batch).', labelNames: ['what'], registers,
    });
    this.reaction = new Histogram({
      name: 'ampere_ban_reaction_seconds', help: "Time from the deciding AMI event's arrival to the ban being in the kernel.", buckets: REACTION_BUCKETS, registers,
    });
    notifyMetrics(src, registers);
    collectDefaultMetrics({ register: this.registry, prefix: 'ampere_' });
  }

  /** Per AMI security event: the hot path, a Map increment. */
  event(kind: string, service: string): void {
    const key = `${kind}\n${service}`;
    this.eventCounts.set(key, (this.eventCounts.get(key) ?? 0) + 1);
  }

  ban(source: string): void { this.bans.inc({ source }); }
  unban(reason: string): void { this.unbans.inc({ reason }); }
  firewallFailure(op: string): void { this.firewallFailures.inc({ op }); }
  firewallRepair(what: string): void { this.firewallRepairs.inc({ what }); }
  observeReaction(seconds: number): void { this.reaction.observe(seconds); }

  render(): Promise<string> { return this.registry.metrics(); }
  get contentType(): string { return this.registry.contentType; }
}

/** The webhook (notify_url): events delivered, given up after the retries, dropped from a full queue; and those waiting. */
function notifyMetrics(src: MetricsSources, registers: Registry[]): void {
  const last = { delivered: 0, failed: 0, dropped: 0 };
  new Counter({
    name: 'ampere_notify_total', help: 'Ban and unban events for the webhook (notify_url), by result: delivered, failed (given up after the retries), dropped (the queue was full).', labelNames: ['result'], registers,
    collect() {
      const n = src.notify?.();
      if (!n) return;
      for (const result of ['delivered', 'failed', 'dropped'] as const) {
        if (n[result] > last[result]) { this.inc({ result }, n[result] - last[result]); last[result] = n[result]; }
      }
    },
  });
  new Gauge({ name: 'ampere_notify_queued', help: 'Events waiting for the webhook (notify_url).', registers, collect() { this.set(src.notify?.()?.queued ?? 0); } });
}

/** A counter that follows a running total read when scraped. */
function monotonic(name: string, help: string, read: () => number, registers: Registry[]): void {
  let last = 0;
  new Counter({ name, help, registers, collect() { const n = read(); if (n > last) { this.inc(n - last); last = n; } } });
}

/** "127.0.0.1:9327", "[::1]:9327", "localhost:9327" -> host and port. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  if (!m || Number(m[3]) > 65535) throw new Error(`metrics address ${JSON.stringify(text)} is not host:port`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** GET /metrics (Prometheus text) and GET /healthz (200 or 503, JSON) on AMPERE_METRICS. */
export async function serveMetrics(
  listen: string,
  metrics: Metrics,
  health: () => { healthy: boolean; [k: string]: unknown },
  log: Logger,
): Promise<Server> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return; }
    if (path === '/metrics') {
      metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
        (err) => { log.error({ err: String(err) }, 'metrics render failed'); res.writeHead(500).end(); },
      );
    } else if (path === '/healthz') {
      const h = health();
      res.writeHead(h.healthy ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h) + '\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  server.listen(port, host);
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => { throw new Error(`metrics cannot listen on ${listen}: ${(err as Error).message}`); }),
  ]);
  return server;
}
