import { afterAll, describe, expect, it } from 'vitest';
import { checkBundle, disposeBundleChecker } from '../../operator/controllers/bundle-check.js';

// The operator's bundle check knows nodejs_compat: node:* imports pass with the flag, are
// refused naming the flag without it, and a built-in the runtime lacks is refused by name.

afterAll(() => disposeBundleChecker());

const src = (spec: string) => `import x from ${JSON.stringify(spec)};\nexport default { fetch() { return new Response(String(x)); } };\n`;

describe('bundle check with compatibility flags', () => {
  it('lets node:buffer through only with nodejs_compat (the same bundle, checked both ways)', async () => {
    expect(await checkBundle('sha256:nb', src('node:buffer'), 'w.js', ['nodejs_compat'])).toBeUndefined();
    expect(await checkBundle('sha256:nb', src('node:buffer'), 'w.js')).toContain('needs the nodejs_compat compatibility flag');
  });
  it('refuses node:fs by name even with the flag', async () => {
    expect(await checkBundle('sha256:fs', src('node:fs'), 'w.js', ['nodejs_compat'])).toContain('"node:fs", a Node built-in this runtime does not provide');
  });
});
