// Queries and search-attribute keys of the alignment workflow. Cancellation is Temporal's own workflow cancellation.
import { defineQuery } from '@temporalio/workflow';
import type { SearchAttributeKey } from '@temporalio/common/lib/search-attributes';
import type { RunProgress } from './types';

export const progressQuery = defineQuery<RunProgress>('progress');

// Registered on the server (idempotently) by src/temporal.ts before any run starts.
export const RUN_ID_ATTR: SearchAttributeKey<'KEYWORD'> = { name: 'RatioloopRunId', type: 'KEYWORD' };
export const ITERATION_ATTR: SearchAttributeKey<'INT'> = { name: 'RatioloopIteration', type: 'INT' };
export const STAGE_ATTR: SearchAttributeKey<'KEYWORD'> = { name: 'RatioloopStage', type: 'KEYWORD' };
export const SEARCH_ATTRIBUTES = [RUN_ID_ATTR, ITERATION_ATTR, STAGE_ATTR] as const;
