// ESLint for gotrail's TypeScript: the recommended and type-aware rules of
// typescript-eslint, run by test/run-all.sh (`npm run lint`).
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  {
    ignores: ["**/node_modules/**", "build/**", "daemon/native/build/**", ".tools/**"],
  },
  {
    files: ["**/*.ts"],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: {
      reportUnusedDisableDirectives: "error",
    },
    rules: {
      eqeqeq: ["error", "always"],
      "no-console": "off",
      // Every promise is awaited, handled or explicitly discarded with `void`
      // (the convention for fire-and-forget work that handles its own
      // errors). node:test's test()/describe()/it() return promises that the
      // runner itself awaits and reports: awaiting them by hand is not the
      // documented use.
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          ignoreVoid: true,
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": [
        "error",
        {
          args: "after-used",
          argsIgnorePattern: "^_",
          varsIgnorePattern: "^_",
          caughtErrors: "all",
          caughtErrorsIgnorePattern: "^_",
          destructuredArrayIgnorePattern: "^_",
          ignoreRestSiblings: true,
        },
      ],
      // verbatimModuleSyntax already requires type-only imports to be marked;
      // this keeps the marking in one style (`import type`).
      "@typescript-eslint/consistent-type-imports": [
        "error",
        { prefer: "type-imports", fixStyle: "inline-type-imports" },
      ],
      "@typescript-eslint/no-import-type-side-effects": "error",
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/prefer-promise-reject-errors": "error",
      "@typescript-eslint/return-await": ["error", "in-try-catch"],
    },
  },
  {
    // The generator marks its output `eslint-disable` whatever it contains:
    // fixes belong in the generator, never in the generated file.
    files: ["daemon/generated/**"],
    linterOptions: { reportUnusedDisableDirectives: "off" },
  },
  {
    files: ["eslint.config.js"],
    extends: [js.configs.recommended],
  },
);
