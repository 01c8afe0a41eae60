import type { z } from 'zod';

/**
 * What an error is about, as the log fields of the same thing are named (worker, actor,
 * region, ...): the logger writes it beside the message, so a failure can be filtered on
 * without parsing its text.
 */
export type ErrorContext = Record<string, string | number | boolean | undefined>;

export interface EdgeErrorOptions extends ErrorOptions {
  context?: ErrorContext;
}

/**
 * The base of every error class in the project. `name` is the subclass's own name, so a
 * stack, a log line and `String(err)` say which class was thrown (a plain `extends Error`
 * says "Error"); `cause` keeps the error this one wraps, so the logger can write the whole
 * chain instead of a message that copied the cause's text.
 *
 * Errors thrown into an isolate (host callbacks) cross isolated-vm, which passes only the
 * built-in types on: an EdgeError arrives as an Error carrying this `name`. Where worker
 * code must see a RangeError or TypeError, the callback throws the built-in one itself.
 */
export class EdgeError extends Error {
  declare readonly context?: ErrorContext;

  constructor(message: string, options?: EdgeErrorOptions) {
    super(message, options);
    // Not enumerable, as Error.prototype.name is: the error's own fields stay its data.
    Object.defineProperty(this, 'name', { value: new.target.name, writable: true, configurable: true, enumerable: false });
    if (options?.context) this.context = options.context;
  }
}

/** A zod error as one line: "messages.0.role: Invalid option ...; max_tokens: Too small ...". */
export function describeIssues(error: z.ZodError): string {
  return error.issues.slice(0, 5).map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}
