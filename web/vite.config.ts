/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the app with hot reload and forwards API calls to a
// running `atlas serve` (ATLAS_URL, default http://127.0.0.1:8080).
const atlas = process.env.ATLAS_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  resolve: {
    // @atlas/client is linked from ../clients/typescript; resolving its
    // imports from here lets it share this app's openapi-fetch.
    preserveSymlinks: true,
  },
  server: {
    proxy: {
      "/api": { target: atlas, changeOrigin: false },
      "/openapi.json": atlas,
      "/health": atlas,
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // The CSP allows no inline script; modern browsers need no polyfill.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 400,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
