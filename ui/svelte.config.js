// Svelte 5 strips TypeScript types in <script lang="ts"> by itself; no preprocessor needed.
export default {
  compilerOptions: {
    runes: true,
  },
};
