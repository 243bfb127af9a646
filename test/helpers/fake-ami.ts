// Moved to tools/lab/ami.ts; kept until firewall-drift and daemon-storage tests are ported.
export * from '../../tools/lab/ami';
