// Loaded between RequireJS and the widget manager (book/_ext/offline_assets.py): the manager
// finds its fonts next to the AMD module it defines, which RequireJS would otherwise place in the
// page's own folder. Point that module at the copy in the book's _static folder.
require.config({
  paths: {
    "@jupyter-widgets/html-manager/dist": new URL("jupyter-widgets", document.currentScript.src).href,
  },
});
