import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vitest/config";

// The built files in ui/dist are embedded into the Rust binary by
// `tauri::generate_context!` (see ../tauri.conf.json, build.frontendDist).
export default defineConfig(({ mode }) => ({
  plugins: [svelte()],
  // Relative asset URLs: the page is served from tauri://localhost/ (or
  // http://tauri.localhost/ on Windows), never from a sub-path.
  base: "./",
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // WebKitGTK 2.40+ / WebView2 / Safari 16 all handle ES2022.
    target: "es2022",
    sourcemap: false,
  },
  // Svelte 5 components mount only with the browser build (jsdom in unit tests).
  resolve: mode === "test" ? { conditions: ["browser"] } : {},
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts"],
  },
}));
