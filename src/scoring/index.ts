export { PenaltyTable, type ScoringOptions, type Verdict } from './penalties';
export { banDuration, type BantimeOptions } from './bantime';
export { tableHeapBytes, maxHostsFor, HEAP_RESERVE_BYTES, LAUNCH_HEAP_LIMIT_MB } from './heap';
