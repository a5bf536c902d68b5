// Multi-node training as a gang (docs/operations.md, "Multi-node training as a gang"): the pure planning step that turns
// the machines a gang has claimed into one rank request per machine. No I/O and no clock, so a workflow can call it and
// replay it. The rendezvous address goes into each rank's environment, never its params, so every rank and every retry
// of the gang has the same spec hash wherever it lands.

/** What a claim activity reports for the machine it holds the slots of. */
export interface GangClaim {
  /** The machine's per-host task queue (src/queues.ts hostQueueName), where its rank activity must run. */
  taskQueue: string;
  host: string;
  /** An address the other machines reach this one at, and a port free on it, for rank 0's rendezvous. */
  address: string;
  port: number;
}

export interface GangRank {
  rank: number;
  taskQueue: string;
  env: Record<string, string>;
}

/** Machines a train stage's params ask for (train.launch.num_machines). */
export function gangMachines(params: Record<string, unknown>): number {
  const n = (params.launch as Record<string, unknown> | undefined)?.num_machines;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 1;
}

/**
 * One rank per claimed machine, rank 0 on the first claim (the first machine ready), every rank told rank 0's
 * address. A gang that cannot start returns its problem instead: the workflow releases the claims and claims again.
 */
export function planGang(machines: number, claims: readonly GangClaim[]): { ranks: GangRank[] } | { problem: string } {
  if (claims.length !== machines) return { problem: `the gang needs ${machines} machines and has ${claims.length}` };
  const seen = new Set<string>();
  for (const c of claims) {
    // Two ranks on one machine would fight over its GPUs and its rendezvous port.
    if (seen.has(c.taskQueue)) return { problem: `host ${c.host} was claimed twice (${c.taskQueue})` };
    seen.add(c.taskQueue);
    if (!Number.isInteger(c.port) || c.port < 1 || c.port > 65535) return { problem: `host ${c.host} offered port ${c.port}` };
  }
  const main = claims[0]!;
  return {
    ranks: claims.map((c, rank) => ({
      rank,
      taskQueue: c.taskQueue,
      env: { RATIOLOOP_MACHINE_RANK: String(rank), RATIOLOOP_MAIN_PROCESS_IP: main.address, RATIOLOOP_MAIN_PROCESS_PORT: String(main.port) },
    })),
  };
}
