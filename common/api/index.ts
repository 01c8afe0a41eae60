export * from './meta.js';
export * from './edgeworker.js';
export * from './durableactor.js';
export * from './policy.js';
export * from './edgepolicy.js';
export * from './crd.js';
