// Moved to tools/lab/netns.ts; kept until firewall-drift and daemon-storage tests are ported.
export * from '../../tools/lab/netns';
export async function removeStaleNamespaces(): Promise<string[]> { return []; }
