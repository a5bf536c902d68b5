// JSON Schema of the config, for editor completion (e.g. yaml-language-server: $schema=...).
import { z } from 'zod';
import { ConfigSchema } from './schema';

export function configJsonSchema(): Record<string, unknown> {
  return { ...z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }), title: 'ratioloop run config' };
}
