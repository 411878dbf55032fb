// Tell require.js where the ipywidgets HTML manager lives: beside this file, in the book's _static/
// folder (make assets puts it there). Its bundle defines the modules @jupyter-widgets/base, controls,
// html-manager/dist/libembed-amd, ...; each computes the folder of its icon fonts from the URL
// require.js gives its name. Without these paths that URL is relative to the page, where the fonts are
// not (404s and missing icons); with them every name resolves into _static/html-manager/.
(function () {
  var manager = new URL("html-manager", document.currentScript.src).href;
  window.requirejs.config({
    paths: {
      "@jupyter-widgets": manager,
      "@jupyter-widgets/html-manager/dist": manager,
    },
  });
})();
