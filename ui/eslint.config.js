import js from '@eslint/js';
import ts from 'typescript-eslint';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';

export default ts.config(
  { ignores: ['dist/', 'node_modules/', 'e2e/artifacts/', 'bench/artifacts/'] },
  js.configs.recommended,
  ...ts.configs.recommended,
  ...svelte.configs['flat/recommended'],
  {
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      // Maps and Sets here are either private bookkeeping or replaced whole in `$state.raw`
      // (copy-on-write), never mutated under a reader.
      'svelte/prefer-svelte-reactivity': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Listeners, streams and timers go through src/lib/tracked.ts so they are counted and
      // released with their view; a raw call is a leak waiting to happen.
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name='addEventListener']",
          message: 'Use listen()/Scope from src/lib/tracked.ts (counted, released on destroy).',
        },
        {
          selector: "NewExpression[callee.name='EventSource']",
          message: 'Use openStream() from src/lib/tracked.ts.',
        },
        {
          selector: "NewExpression[callee.name='ResizeObserver']",
          message: 'Use observeResize()/Scope from src/lib/tracked.ts.',
        },
        {
          selector: "CallExpression[callee.name=/^(setInterval|setTimeout)$/]",
          message: 'Use every()/after()/Scope from src/lib/tracked.ts.',
        },
      ],
    },
  },
  {
    files: ['**/*.svelte', '**/*.svelte.ts'],
    languageOptions: { parserOptions: { parser: ts.parser, extraFileExtensions: ['.svelte'] } },
  },
  {
    files: ['src/lib/tracked.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    files: ['e2e/**', 'bench/**', '*.config.*'],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
    rules: { 'no-restricted-syntax': 'off' },
  },
);
