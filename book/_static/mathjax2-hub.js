// The widget manager (@jupyter-widgets/html-manager) typesets widget labels with the
// MathJax 2 call MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads
// MathJax 3, which has no Hub. This gives every MathJax object the page ends up with
// (the configuration first, then MathJax 3 itself) a Hub that forwards to MathJax 3.
(function () {
  "use strict";
  const hub = {
    Queue: function (...jobs) {
      for (const job of jobs) {
        const element = Array.isArray(job) ? job[2] : undefined;
        const mathjax = window.MathJax;
        if (element && mathjax && mathjax.startup && mathjax.typesetPromise) {
          mathjax.startup.promise.then(() => mathjax.typesetPromise([element])).catch(() => {});
        }
      }
    },
  };
  let current = window.MathJax;
  if (current && !current.Hub) current.Hub = hub;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: () => current,
    set: (value) => {
      current = value;
      if (value && typeof value === "object" && !value.Hub) {
        Object.defineProperty(value, "Hub", { value: hub, enumerable: false, configurable: true });
      }
    },
  });
})();
