import { vitePreprocess } from "@sveltejs/vite-plugin-svelte";

export default {
  preprocess: vitePreprocess(),
  // Styles go to the CSS bundle: the CSP allows no inline styles.
  compilerOptions: { css: "external" },
};
