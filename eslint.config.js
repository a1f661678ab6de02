// Type-aware lint (typescript-eslint, through the TypeScript project service).
// The rules that matter in a security server need the type checker: promises
// left floating or passed where a callback's result is ignored, `any` leaking
// past validation, conditions the types say cannot change, switches that miss
// a case. Biome's promise rules are nursery rules on its own partial inference,
// not the TypeScript checker, and it has nothing for `any` flowing through
// (no-unsafe-*): hence ESLint. Formatting is Prettier's (eslint-config-prettier,
// last, turns off what would fight it).
//
// recommendedTypeChecked brings no-floating-promises, no-misused-promises,
// await-thenable, no-unsafe-{argument,assignment,call,member-access,return},
// only-throw-error, prefer-promise-reject-errors and unbound-method.
import js from '@eslint/js'
import prettier from 'eslint-config-prettier'
import { defineConfig } from 'eslint/config'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default defineConfig(
  {
    // migrations/ is SQL and drizzle-kit's generated snapshots.
    ignores: ['node_modules/', '**/dist/', 'data/', 'coverage/', 'scratch/', 'migrations/'],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: {
        projectService: {
          // Outside tsconfig.json's include: checked with the default compiler options.
          allowDefaultProject: ['eslint.config.js', 'drizzle.config.ts', 'bin/*.js'],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // From strictTypeChecked. Left out of it: no-non-null-assertion (with
      // noUncheckedIndexedAccess, `xs[i]!` after a bounds check is the idiom, and a
      // runtime check there would be dead code), no-confusing-void-expression
      // (stylistic: `() => void f()` and `(r) => resolve(r)`), no-dynamic-delete (child
      // process environments and claim sets are records, not maps), no-unnecessary-type-parameters
      // and unified-signatures (API shape, not correctness).
      '@typescript-eslint/no-unnecessary-condition': 'error',
      '@typescript-eslint/no-misused-spread': 'error',
      '@typescript-eslint/no-meaningless-void-operator': 'error',
      '@typescript-eslint/no-invalid-void-type': 'error',
      '@typescript-eslint/no-extraneous-class': 'error',
      '@typescript-eslint/no-mixed-enums': 'error',
      '@typescript-eslint/no-non-null-asserted-nullish-coalescing': 'error',
      '@typescript-eslint/no-unnecessary-boolean-literal-compare': 'error',
      '@typescript-eslint/no-unnecessary-template-expression': 'error',
      '@typescript-eslint/no-unnecessary-type-arguments': 'error',
      '@typescript-eslint/no-unnecessary-type-conversion': 'error',
      '@typescript-eslint/no-unsafe-enum-assignment': 'error',
      '@typescript-eslint/no-useless-constructor': 'error',
      '@typescript-eslint/no-useless-default-assignment': 'error',
      '@typescript-eslint/prefer-literal-enum-member': 'error',
      '@typescript-eslint/prefer-reduce-type-parameter': 'error',
      '@typescript-eslint/prefer-return-this-type': 'error',
      '@typescript-eslint/related-getter-setter-pairs': 'error',
      '@typescript-eslint/use-unknown-in-catch-callback-variable': 'error',
      '@typescript-eslint/ban-ts-comment': ['error', { minimumDescriptionLength: 10 }],
      // Numbers and booleans print as expected; objects (`[object Object]`), `undefined`,
      // `null` and `any` in a message or a log line are mistakes.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowAny: false, allowNullish: false, allowRegExp: false, allowNever: false },
      ],
      '@typescript-eslint/restrict-plus-operands': [
        'error',
        { allowAny: false, allowBoolean: false, allowNullish: false, allowNumberAndString: false, allowRegExp: false },
      ],
      // `return await` inside try (else its catch and finally never see the rejection), plain `return` elsewhere.
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      // Not in any preset: a switch over a union must name every member (or have a default).
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      // A `let` that a callback reads before its one assignment (e.g. a server's handler
      // before the app exists) cannot be `const`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // A `sub` key in an object literal whose contextual type includes string is taken
      // for String.prototype.sub (deprecated); calls of String's deprecated methods are
      // still reported.
      '@typescript-eslint/no-deprecated': ['error', { allow: [{ from: 'lib', name: 'String' }] }],
      // `async` without `await` still turns a synchronous throw into a rejection, which
      // callers of the async ports (in-memory logs, stubs) rely on.
      '@typescript-eslint/require-await': 'off',
      // Errors are summarised on purpose, by code or message: a cause may carry what must
      // not reach a log or a response (a JSON.parse error quotes its input, e.g. key material).
      'preserve-caught-error': 'off',
      // `_name` marks what a destructuring leaves out on purpose.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
    },
  },
  {
    files: ['test/**'],
    rules: {
      // afterAll runs even when beforeAll failed, so teardown reads `x?.close()` although
      // `let x: T` (assigned in beforeAll) says it is always set.
      '@typescript-eslint/no-unnecessary-condition': 'off',
      // vitest's asymmetric matchers (expect.any, expect.stringContaining, ...) are typed `any`.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      // Tests take methods off the factories' objects (closures, no `this`) to stub or restore them.
      '@typescript-eslint/unbound-method': 'off',
      // What it finds in tests is oauth4webapi's allowInsecureRequests (the OpenID provider
      // under test listens on loopback http) and `sub` keys in test tables typed together
      // with strings, taken for String.prototype.sub.
      '@typescript-eslint/no-deprecated': 'off',
    },
  },
  prettier,
)
