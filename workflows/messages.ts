// Queries, control updates and search-attribute keys of the alignment workflow. Cancellation is Temporal's own
// workflow cancellation. Control updates are validated when sent and take effect at the next stage boundary.
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { SearchAttributeKey } from '@temporalio/common/lib/search-attributes';
import type { RunControl, RunProgress, StageName } from './types';

export const progressQuery = defineQuery<RunProgress>('progress');

export const pauseUpdate = defineUpdate<RunControl>('pause');
export const unpauseUpdate = defineUpdate<RunControl>('unpause');
export const setIterationsUpdate = defineUpdate<RunControl, [number]>('setIterations');
export const stopAfterIterationUpdate = defineUpdate<RunControl>('stopAfterIteration');
export const skipStageUpdate = defineUpdate<RunControl, [{ iteration: number; stage: StageName }]>('skipStage');

/** The config schema's maximum for `iterations` (test/config.test.ts checks they agree): workflows import no zod. */
export const MAX_ITERATIONS = 100;

// Registered on the server (idempotently) by src/temporal.ts before any run starts.
export const RUN_ID_ATTR: SearchAttributeKey<'KEYWORD'> = { name: 'RatioloopRunId', type: 'KEYWORD' };
export const ITERATION_ATTR: SearchAttributeKey<'INT'> = { name: 'RatioloopIteration', type: 'INT' };
export const STAGE_ATTR: SearchAttributeKey<'KEYWORD'> = { name: 'RatioloopStage', type: 'KEYWORD' };
export const SEARCH_ATTRIBUTES = [RUN_ID_ATTR, ITERATION_ATTR, STAGE_ATTR] as const;
