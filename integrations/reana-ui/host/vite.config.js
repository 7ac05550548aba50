// The patch's src/components/LiveLog.js and the element (src/vendor/) are copied into src/
// by tests/test_reana_ui_host.py before the build; `~` is reana-ui's alias for its src/.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  resolve: { alias: { "~": fileURLToPath(new URL("./src", import.meta.url)) } },
  // reana-ui (create-react-app) writes JSX in .js files
  esbuild: { include: /src\/.*\.jsx?$/, exclude: [], loader: "jsx", jsx: "automatic" },
  // React's development build: StrictMode mounts every component twice
  define: { "process.env.NODE_ENV": JSON.stringify("development") },
  build: { outDir: "dist", minify: false, emptyOutDir: true },
});
