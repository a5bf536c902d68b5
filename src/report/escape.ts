// HTML escaping for the report: every string from a run folder (model responses, prompts, run ids, config values) is
// untrusted text and goes through here, in element content and in attribute values alike.
const MAP: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => MAP[c]!);
