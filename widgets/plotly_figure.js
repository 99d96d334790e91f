// prefaudit's loader for plotly's FigureWidget (see prefaudit/views/plotly_widget.py for why).
//
// anywidget gives a model 2 s to import its ES module and run `initialize`; comm messages wait
// for that and are dropped for good when it fails ("[anywidget] Failed to initialize model").
// plotly's module is ~5 MB and took 2.6 s to import on a quiet 2-core machine, once per figure.
// This module is small: `initialize` returns at once, plotly's bundle (the `_plotly_esm` trait)
// is imported once per page in the background, and the Python → JS messages that arrive
// meanwhile are replayed to plotly's model once it is there. `render` waits for it, then keeps
// the plot as wide as its container: plotly's anywidget view sizes itself once, at render, when
// the element is usually not in the page yet (700 px).

const PY2JS = [
  "_py2js_addTraces",
  "_py2js_deleteTraces",
  "_py2js_moveTraces",
  "_py2js_restyle",
  "_py2js_relayout",
  "_py2js_update",
  "_py2js_animate",
  "_py2js_removeLayoutProps",
  "_py2js_removeTraceProps",
];

// One import per plotly version and page, shared by every figure (and every prefaudit view).
const BUNDLES = (globalThis.__prefauditPlotly ??= new Map());

function plotlyModule(model) {
  const key = model.get("_plotly_version");
  if (!BUNDLES.has(key)) {
    const url = URL.createObjectURL(new Blob([model.get("_plotly_esm")], { type: "text/javascript" }));
    BUNDLES.set(
      key,
      import(/* webpackIgnore: true */ url).finally(() => URL.revokeObjectURL(url)),
    );
  }
  return BUNDLES.get(key);
}

function keepWidth(mod, model, el) {
  // plotly's own autosize (relayout + report to Python), on a helper view of the same element
  const sizer = new mod.FigureView(new mod.FigureModel(model, {}), el);
  const fit = () => {
    const width = el.clientWidth;
    const drawn = el._fullLayout && el._fullLayout.width;
    if (width > 0 && drawn && Math.abs(width - drawn) >= 2) sizer.autosizeFigure();
  };
  const observer = new ResizeObserver(() => requestAnimationFrame(fit));
  observer.observe(el);
  if (typeof el.on === "function") el.on("plotly_afterplot", fit); // plotly's own emitter
  return () => observer.disconnect();
}

export default () => {
  let plotly = null; // plotly's widget for this model, once its module is imported
  let ready = null;
  return {
    initialize(ctx) {
      const { model } = ctx;
      const held = [];
      for (const name of PY2JS) {
        model.on(`change:${name}`, () => {
          const value = model.get(name);
          if (!plotly && value !== null) held.push([name, value]);
        });
      }
      // Not awaited: anywidget would count the import against its 2 s.
      ready = plotlyModule(model).then(async (mod) => {
        const widget = typeof mod.default === "function" ? await mod.default() : mod.default;
        await widget.initialize?.(ctx);
        plotly = widget;
        for (const [name, value] of held) {
          model.set(name, value); // what plotly's model would have seen, in order
          model.set(name, null);
        }
        return mod;
      });
      ready.catch((err) => console.error("[prefaudit] plotly's widget module failed to load", err));
    },
    async render(ctx) {
      const mod = await ready;
      const remove = plotly.render(ctx);
      const stop = keepWidth(mod, ctx.model, ctx.el);
      return () => {
        stop();
        if (typeof remove === "function") remove();
      };
    },
  };
};
