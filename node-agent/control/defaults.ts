// Defaults `edge agent` prints in its help, apart from desired-state.ts so the CLI reads
// them without importing what that file does (an agent's front never loads the isolate
// runtime: node-agent/front.ts).

/** The region a directory-mode agent takes when given none: it only names model-server Services. */
export const STANDALONE_REGION = 'standalone';
