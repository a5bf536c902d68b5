// Writes docs/configuration.md from the schema (npm run docs:config).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { configReferenceMarkdown } from '../src/config/reference';
import { projectRoot } from '../src/paths';

await writeFile(path.join(projectRoot, 'docs', 'configuration.md'), configReferenceMarkdown());
