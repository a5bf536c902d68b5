// The claim a gang member answers with (docs/operations.md, "Multi-node training as a gang"): which per-host queue its
// rank must go to, and an address and free port for the rendezvous in case it becomes rank 0. Registered on the gpu and
// class queues, so a claim lands on a machine that polls the class the training needs.
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { Context } from '@temporalio/activity';
import type { GangClaim } from '../workflows/gang';
import { machineName } from '../src/queues';

export interface GangActivities {
  /** holdMs: answer only after this long, holding this worker's task slot, so the gang's other claims go to other machines. */
  claimMachine(req?: { holdMs?: number }): Promise<GangClaim>;
}

/** A port free on this host now (the OS picks it); the rendezvous binds it moments later, so a clash is retried. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * @param hostQueue this worker's per-host queue.
 * @param address how other machines reach this one: $RATIOLOOP_GANG_ADDRESS (an interface's IP, for hosts whose name
 *   does not resolve across the cluster), else the machine's name ($RATIOLOOP_HOSTNAME, else the host name).
 */
export function createGangActivities(hostQueue: string, address: string = process.env.RATIOLOOP_GANG_ADDRESS || machineName(), host: string = machineName()): GangActivities {
  return {
    async claimMachine(req) {
      const hold = Math.min(Math.max(0, req?.holdMs ?? 0), 30_000);
      if (hold > 0) await delay(hold, undefined, { signal: Context.current().cancellationSignal });
      return { taskQueue: hostQueue, host, address, port: await freePort() };
    },
  };
}
