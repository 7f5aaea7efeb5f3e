// MathJax 3 configuration (loaded before the vendored docs/assets/mathjax/tex-mml-chtml.js).
//
// Only three kinds of element are typeset, so a stray "$" in prose or code is never math:
//   .arithmatex           what pymdownx.arithmatex (generic mode) emits for $..$ and $$..$$
//                         in Markdown pages and annotated-source notes, as \(..\) and \[..\];
//   .jp-RenderedMarkdown  notebook Markdown cells (mkdocs-jupyter keeps $..$ and $$..$$ raw);
//   .jp-RenderedLatex     notebook outputs of type text/latex.
//
// Fonts: left to MathJax, which resolves them next to its own script
// (assets/mathjax/output/chtml/fonts/woff-v2/). Setting chtml.fontURL to "[mathjax]/..." here
// would NOT be resolved and would break them.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams",
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown|jp-RenderedLatex",
  },
};

// mkdocs-material's instant navigation swaps pages without a reload: typeset each new page.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
