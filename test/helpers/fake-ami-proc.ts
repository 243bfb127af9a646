// Moved to tools/lab/ami-proc.ts; kept until firewall-drift and daemon-storage tests are ported.
export * from '../../tools/lab/ami-proc';
