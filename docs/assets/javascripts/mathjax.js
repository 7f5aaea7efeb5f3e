// MathJax 3 configuration (loaded before the vendored docs/assets/mathjax/tex-mml-chtml.js).
//
// Only three kinds of element are typeset, so a stray "$" in prose or code is never math:
//   .arithmatex           what pymdownx.arithmatex (generic mode) emits for $..$ and $$..$$
//                         in Markdown pages and annotated-source notes, as \(..\) and \[..\];
//   .jp-RenderedMarkdown  notebook Markdown cells (mkdocs-jupyter keeps $..$ and $$..$$ raw);
//   .jp-RenderedLatex     notebook outputs of type text/latex.
// They are selected with startup.elements. (The usual recipe, ignoreHtmlClass ".*|" with
// processHtmlClass "arithmatex", would skip the paragraphs *inside* a notebook cell: MathJax
// re-applies the ignore pattern to every nested element that lacks the process class.)
//
// Fonts: left to MathJax, which resolves them next to its own script
// (assets/mathjax/output/chtml/fonts/woff-v2/). Setting chtml.fontURL to "[mathjax]/..." here
// would NOT be resolved and would break them.
const MATH_ELEMENTS = [".arithmatex", ".jp-RenderedMarkdown", ".jp-RenderedLatex"];

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams",
  },
  startup: {
    elements: MATH_ELEMENTS,
  },
};

// Pages load whole (mkdocs.yml does not enable navigation.instant), so MathJax's startup typeset
// is the only one. With instant navigation each new page would need MathJax.typesetPromise(...)
// on `document$`, and only on the new content: typesetting a page twice also typesets the
// hidden MathML copies that MathJax adds for screen readers.
