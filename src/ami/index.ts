export { AmiConnection, type AmiOptions, type AmiState, type AmiMessage } from './connection';
