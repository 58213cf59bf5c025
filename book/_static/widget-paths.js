// Where RequireJS finds the vendored widget manager and anywidget's front-end (book/vendor-js.sh),
// relative to this file, so pages at any depth agree. Without it, the manager would look for
// anywidget on a CDN, and for its icon fonts next to the page.
(function () {
  const vendor = new URL("vendor/", document.currentScript.src).href;
  requirejs.config({
    paths: {
      "@jupyter-widgets": vendor + "html-manager",
      "@jupyter-widgets/html-manager/dist": vendor + "html-manager",
      anywidget: vendor + "anywidget/index",
    },
  });
})();
