// Fault injection for the fault suite (test/faults.test.ts). Inert unless the worker has RATIOLOOP_FAULT, a
// comma-separated list of:
//   hold@POINT[:STAGE[:ITERATION]]  at POINT, append "reached POINT STAGE ITERATION PID" to <runDir>/faults.log and wait
//                                   (RATIOLOOP_FAULT_HOLD_S, default 120 s) so the suite can kill this process right there
//   hide@PATH                       this worker sees nothing at or under the absolute PATH (a mount missing on one host)
// POINT here: hashing-inputs (after a stage's first input is hashed). The Python side (scripts/ratioloop_py/faults.py)
// reads the same variable for before-manifest-rename and after-manifest-rename.
import { appendFile } from 'node:fs/promises';
import path from 'node:path';

interface Where {
  runDir: string;
  stage: string;
  iteration: number;
}

const rules = (): string[] => (process.env.RATIOLOOP_FAULT ?? '').split(',').map((s) => s.trim()).filter(Boolean);

function holdMatches(rule: string, point: string, w: Where): boolean {
  if (!rule.startsWith('hold@')) return false;
  const [p, stage, iteration] = rule.slice('hold@'.length).split(':');
  return p === point && (!stage || stage === w.stage) && (!iteration || Number(iteration) === w.iteration);
}

/** At a named point of a stage attempt: hold there if RATIOLOOP_FAULT asks to (see above); otherwise return at once. */
export async function faultPoint(point: string, w: Where): Promise<void> {
  if (!rules().some((r) => holdMatches(r, point, w))) return;
  await appendFile(path.join(w.runDir, 'faults.log'), `reached ${point} ${w.stage} ${w.iteration} ${process.pid}\n`);
  const seconds = Number(process.env.RATIOLOOP_FAULT_HOLD_S ?? '120');
  await new Promise((r) => setTimeout(r, seconds * 1000));
}

/** Rejects (like a failed stat) when RATIOLOOP_FAULT hides `p` from this worker, noting it in faults.log. */
export async function assertVisible(p: string, w: Where): Promise<void> {
  for (const r of rules()) {
    if (!r.startsWith('hide@')) continue;
    const hidden = path.resolve(r.slice('hide@'.length));
    if (p !== hidden && !p.startsWith(hidden + path.sep)) continue;
    await appendFile(path.join(w.runDir, 'faults.log'), `hidden ${p} ${w.stage} ${w.iteration} ${process.pid}\n`);
    throw new Error(`${p}: hidden on this worker by RATIOLOOP_FAULT`);
  }
}
