// Row tag (prefaudit.views.shaper.RowTag): an invisible widget inside each shaper row that
// writes data-feature="<id>" onto its row (`.pa-weight-row`), which ipywidgets boxes cannot do.
// The row element exists only once the box has attached this view, so wait for it.

function render({ model, el }) {
  el.classList.add("pa-rowtag");
  el.style.display = "none";
  let frame = 0;
  let tries = 0;
  const tag = () => {
    const row = el.closest(".pa-weight-row");
    if (row) {
      row.dataset.feature = model.get("feature");
      return;
    }
    if (tries++ < 600) frame = requestAnimationFrame(tag); // ~10 s at 60 fps, then give up
  };
  tag();
  const onChange = () => {
    tries = 0;
    tag();
  };
  model.on("change:feature", onChange);
  return () => {
    cancelAnimationFrame(frame);
    model.off("change:feature", onChange);
  };
}

export default { render };
