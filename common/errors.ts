import type { z } from 'zod';

/** A zod error as one line: "messages.0.role: Invalid option ...; max_tokens: Too small ...". */
export function describeIssues(error: z.ZodError): string {
  return error.issues.slice(0, 5).map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}
