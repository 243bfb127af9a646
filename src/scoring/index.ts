export { PenaltyTable, type ScoringOptions, type Verdict } from './penalties';
export { banDuration, type BantimeOptions } from './bantime';
