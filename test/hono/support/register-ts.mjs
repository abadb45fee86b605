// Lets a child `node` process run this repository's TypeScript without a build:
//   node --import ./test/hono/support/register-ts.mjs some-file.ts
// Each .ts file is transpiled on load (types dropped, nothing checked), and the `.js`
// specifiers the sources use are resolved to the `.ts` files beside them.
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
