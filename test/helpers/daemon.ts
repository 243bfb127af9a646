// Moved to tools/lab/daemon.ts; kept until firewall-drift and daemon-storage tests are ported.
export * from '../../tools/lab/daemon';
