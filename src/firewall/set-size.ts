/**
 * set_size: the most elements each family's set of hosts holds (the ipset backend's maxelem).
 * The default is room for a million scanners: the hash grows on demand, maxelem is only its
 * ceiling. ipset takes any maxelem up to 2^32-1; Ampere keeps it from the ranges' set's bound
 * (RANGE_MAXELEM) to 16M hosts.
 */
export const SET_SIZE_DEFAULT = 1_048_576;
export const SET_SIZE_MIN = 65_536;
export const SET_SIZE_MAX = 16_777_216;
