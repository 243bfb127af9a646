import { networkOf } from '../allow';
import { cleanText, type ControlDeps } from './routes';
import { HttpError, type ControlAnswer, type ControlRequest } from './server';

/** `ampere allow`: the list, and runtime entries added (lifting the bans they cover) or removed. */
export function allowRoutes(d: ControlDeps): Record<string, (r: ControlRequest) => Promise<ControlAnswer> | ControlAnswer> {
  return {
    'GET /allow': () => ({ body: { entries: d.allow.entries() } }),

    'POST /allow': async (r) => {
      const raw = r.body.cidr;
      const c = typeof raw === 'string' ? networkOf(raw) : null;
      if (!c) throw new HttpError(400, `${JSON.stringify(String(raw ?? '').slice(0, 80))} is not an IP address or CIDR`);
      if (c.bits === 0) throw new HttpError(400, `${c.text} would allow every address and turn Ampere off; give a narrower network`);
      const added = await d.allow.add(c, cleanText(r.body.note, 200), Date.now(), d.allowEffects);
      d.log.info({ cidr: c.text, unbanned: added.unbanned.length }, 'allow list: added');
      return { body: added };
    },

    'DELETE /allow': async (r) => {
      const raw = r.query.get('cidr') ?? '';
      const c = networkOf(raw);
      if (!c) throw new HttpError(400, `${JSON.stringify(raw.slice(0, 80))} is not an IP address or CIDR`);
      const { removed, fixed } = await d.allow.remove(c);
      if (fixed) {
        const where = fixed.source === 'config' ? 'configured (AMPERE_ALLOW or allow in the config file): change it there' : fixed.source === 'ami-host' ? 'the AMI host: always allowed' : 'built in: always allowed';
        throw new HttpError(409, `${c.text} is ${where}${removed ? ' (its runtime entry was removed)' : ''}`);
      }
      if (!removed) throw new HttpError(404, `${c.text} is not in the runtime allow list`);
      d.log.info({ cidr: c.text }, 'allow list: removed');
      return { body: { cidr: c.text, removed: true } };
    },
  };
}
