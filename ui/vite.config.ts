import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// The bundle is served two ways: by the headless backend at `/`, and by the Tauri shell from
// `frontendDist: "../ui/dist"`. Relative asset paths (`base: './'`) work for both.
export default defineConfig({
  base: './',
  plugins: [svelte()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // WebKitGTK (Tauri on Linux) and current Chromium.
    target: ['es2022', 'chrome110', 'safari16'],
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 400,
  },
  server: {
    // `npm run dev` against a running backend: COLLISIONOS_URL=http://127.0.0.1:3002
    proxy: process.env.COLLISIONOS_URL
      ? { '/api': { target: new URL(process.env.COLLISIONOS_URL).origin, changeOrigin: false } }
      : undefined,
  },
});
