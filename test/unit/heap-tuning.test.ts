import { describe, expect, it } from 'vitest';
import { pretenuringChosen } from '../../src/heap-tuning.js';

describe('pretenuringChosen: node was told about pretenuring on its command line', () => {
  it('reads every form V8 accepts', () => {
    for (const arg of [
      '--allocation-site-pretenuring', '--no-allocation-site-pretenuring', '--allocation_site_pretenuring', '--no_allocation_site_pretenuring',
      '--noallocation-site-pretenuring', '-allocation-site-pretenuring', '-no-allocation-site-pretenuring', '--allocation-site-pretenuring=false',
    ]) {
      expect(pretenuringChosen(['--inspect', arg]), arg).toBe(true);
    }
  });

  it('leaves other flags, and none, alone', () => {
    expect(pretenuringChosen([])).toBe(false);
    expect(pretenuringChosen(['--expose-gc', '--max-semi-space-size=1', '--trace-pretenuring', '--allocation-site-pretenuring-x'])).toBe(false);
  });
});
