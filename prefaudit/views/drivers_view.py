"""Drivers: the pairs that carry most of a feature's learning signal, and one-click edits of them.

The table lists the top ``k`` pairs of ``session.drivers(feature)`` (share of the predicted
signal, Δ, the current edit, the prompt and both responses as text). The buttons send intents
for exactly those pairs: **exclude** (``session.exclude_pairs``: training leaves them out),
**flip** (``session.flip_pairs``: training swaps chosen and rejected), **restore**
(``session.edits.restore``) and **export** (``session.edits.export``: their ids and texts as
``.jsonl`` or ``.csv``). The what-if line (``session.edits.preview``) gives the feature's
predicted signal as things stand, with these pairs excluded and with them flipped, before
anything is clicked. The view follows ``session.focus`` unless pinned to a feature (or group).

The export box writes a new file; an existing one is replaced only after a second click on
**overwrite**, which appears for that file. Under ``prefaudit app`` (or with ``export_root``) it
writes only inside that folder; a refused path is said in the message line, not raised.

Example
-------
>>> view = session.drivers_view("concept:length", top_k=5)   # doctest: +SKIP
>>> view.exclude_button.click()                              # the 5 pairs leave training  # doctest: +SKIP
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..audit.exports import export_root as resolve_export_root
from ..errors import PrefauditError
from .base import SessionView

#: Characters of each text shown in a table cell (the export writes them whole).
SNIPPET = 160


def _snippet(text: Any) -> str:
    s = str(text)
    return html.escape(s[:SNIPPET] + ("…" if len(s) > SNIPPET else ""))


def _num(x: float, spec: str = "{:+.3f}") -> str:
    return spec.format(x) if x == x else "n/a"  # NaN: no pair left


class DriversView(SessionView):
    """Top drivers of a feature's signal with exclude / flip / restore / export and a what-if line.

    Parameters
    ----------
    session : AuditSession
    feature : int or str, optional
        Pin the view to this feature (or ``group:<k>``); by default it follows ``session.focus``.
    top_k : int
        How many of the strongest drivers the table lists and the buttons act on.
    export_path : str or Path
        Default file of the export button (``.jsonl`` or ``.csv``).
    export_root : str or Path, optional
        Write only inside this folder (default: the app's, ``$PREFAUDIT_EXPORT_DIR``; else anywhere).

    Attributes
    ----------
    top_k : ipywidgets.BoundedIntText (``.pa-drivers-k``)
    table, preview, message : ipywidgets.HTML (``.pa-drivers-table``, ``.pa-drivers-preview``, ``.pa-drivers-message``)
    exclude_button, flip_button, restore_button, export_button : ipywidgets.Button
    overwrite_button : ipywidgets.Button (``.pa-drivers-overwrite``)
        Shown only after an export found its file existing: replaces that file.
    path : ipywidgets.Text (``.pa-drivers-path``)
    """

    css_class = "prefaudit-drivers"

    def __init__(
        self,
        session: Any,
        *,
        feature: int | str | None = None,
        top_k: int = 10,
        export_path: str | Path = "prefaudit-drivers.jsonl",
        export_root: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        if int(top_k) < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k!r}.")
        self.pinned = feature
        if feature is not None and not str(feature).startswith("group:"):
            self.pinned = self.session.space.feature_id(feature)
        self.top_k = w.BoundedIntText(
            value=int(top_k),
            min=1,
            max=len(self.session.data),
            description="top",
            layout=w.Layout(width="130px"),
        )
        self.top_k.add_class("pa-drivers-k")
        self.head = w.HTML()
        self.head.add_class("pa-drivers-head")
        self.preview = w.HTML()
        self.preview.add_class("pa-drivers-preview")
        self.table = w.HTML()
        self.table.add_class("pa-drivers-table")
        self.message = w.HTML()
        self.message.add_class("pa-drivers-message")
        self.export_root = resolve_export_root(export_root)
        self.path = w.Text(value=str(export_path), layout=w.Layout(width="240px"))
        self.path.add_class("pa-drivers-path")
        if self.export_root is not None:
            self.path.tooltip = f"a file name in {self.export_root}"
        self.exclude_button = self._button("exclude", "leave these pairs out of training", self._exclude)
        self.flip_button = self._button(
            "flip", "train these pairs with chosen and rejected swapped", self._flip
        )
        self.restore_button = self._button("restore", "undo the edits of these pairs", self._restore)
        self.export_button = self._button("export", "write their ids and texts to the file", self._export)
        self.overwrite_button = self._button("overwrite", "replace the existing file", self._overwrite)
        self.overwrite_button.layout.display = "none"
        # The file the overwrite button is for: a confirm holds for that path only.
        self._confirm: str | None = None
        actions = w.HBox(
            [
                self.top_k,
                self.exclude_button,
                self.flip_button,
                self.restore_button,
                self.export_button,
                self.path,
                self.overwrite_button,
            ],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.set_body(self.head, actions, self.preview, self.message, self.table)
        self.top_k.observe(self.guard(lambda _c: self.redraw()), names="value")
        self.path.observe(self.guard(lambda _c: self._ask_confirm(None)), names="value")
        self.observe_session(lambda _c: self.redraw(), "focus", "pair_edits", "weights", "results_version")
        self.redraw()

    # ------------------------------------------------------------------ what it shows
    @property
    def feature(self) -> str | None:
        """The feature (or group) shown: the pinned one, else the session's focus."""
        return self.pinned if self.pinned is not None else self.session.focus

    def driver_ids(self) -> list[Any]:
        """``pair_id`` of the top drivers the buttons act on."""
        if self.feature is None:
            return []
        return (
            self.session.drivers(self.feature, top_k=self.top_k.value)["pair_id"]
            .head(self.top_k.value)
            .tolist()
        )

    def redraw(self) -> None:
        fid = self.feature
        buttons = (self.exclude_button, self.flip_button, self.restore_button, self.export_button)
        for b in (*buttons, self.overwrite_button):
            b.disabled = fid is None
        if fid is None:
            self.head.value = "Select a feature to see the pairs that drive its learning signal."
            self.preview.value = self.table.value = ""
            return
        k = self.top_k.value
        drivers = self.session.drivers(fid, top_k=k)
        top = drivers.head(k)
        n_edits = len(self.session.pair_edits)
        self.head.value = (
            f"<b>drivers of {html.escape(fid)}</b> · {html.escape(self.session.label(fid)) if not fid.startswith('group:') else ''}"
            f" · the top {k} carry {_num(float(top['share'].sum()) * 100, '{:.0f}')} % of its signal"
            f" · <span class='pa-drivers-edits' data-count='{n_edits}'>{n_edits} pair edit(s) in the session</span>"
        )
        what = self.session.edits.preview(fid, top["pair_id"].tolist())
        self.preview.value = (
            f"<span class='pa-drivers-preview-line' data-signal='{what['signal']!r}' "
            f"data-excluded='{what['signal_excluded']!r}' data-flipped='{what['signal_flipped']!r}'>"
            f"predicted signal (weighted mean Δ): now {_num(what['signal'])} ({_num(what['signal_z'], '{:+.2f}')} sd)"
            f" · these {k} excluded {_num(what['signal_excluded'])} ({_num(what['signal_excluded_z'], '{:+.2f}')} sd)"
            f" · flipped {_num(what['signal_flipped'])} ({_num(what['signal_flipped_z'], '{:+.2f}')} sd)</span>"
        )
        df = self.session.data.df
        rows = []
        edits = self.session.pair_edits
        for r in top.itertuples(index=False):
            edit = edits.get(r.pair_id.item() if hasattr(r.pair_id, "item") else r.pair_id, "")
            prompt = self.session.data.messages(int(r.position))
            last = prompt[-1]["content"] if prompt else ""
            rows.append(
                f"<tr class='pa-driver' data-pair-id='{html.escape(str(r.pair_id))}' data-edit='{html.escape(edit)}'>"
                f"<td>{html.escape(str(r.pair_id))}</td><td>{_num(float(r.share) * 100, '{:+.1f}')} %</td>"
                f"<td>{_num(float(r.delta))}</td><td>{html.escape(edit)}</td>"
                f"<td class='pa-driver-prompt'>{_snippet(last)}</td>"
                f"<td class='pa-driver-chosen'>{_snippet(df['chosen'].iloc[int(r.position)])}</td>"
                f"<td class='pa-driver-rejected'>{_snippet(df['rejected'].iloc[int(r.position)])}</td></tr>"
            )
        self.table.value = (
            "<table class='pa-drivers-rows' style='font-size:12px;border-collapse:collapse'><thead><tr>"
            "<th>pair</th><th>share</th><th>Δ</th><th>edit</th><th>prompt (last turn)</th>"
            "<th>chosen</th><th>rejected</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )

    # ------------------------------------------------------------------ intents
    def _button(self, name: str, tooltip: str, handler: Any) -> w.Button:
        b = w.Button(description=name, tooltip=tooltip, layout=w.Layout(width="auto"))
        b.add_class(f"pa-drivers-{name}")
        b.on_click(self.guard(lambda _b: handler()))
        return b

    def _exclude(self) -> None:
        ids = self.driver_ids()
        self.session.exclude_pairs(ids)
        self._say(f"excluded {len(ids)} pairs from training")

    def _flip(self) -> None:
        ids = self.driver_ids()
        self.session.flip_pairs(ids)
        self._say(f"flipped {len(ids)} pairs for training")

    def _restore(self) -> None:
        ids = self.driver_ids()
        self.session.edits.restore(ids)
        self._say(f"restored {len(ids)} pairs")

    def _export(self, *, overwrite: bool = False) -> None:
        ids = self.driver_ids()
        typed = self.path.value
        try:
            path = self.session.edits.export(
                typed, ids, feature=self.feature, overwrite=overwrite, root=self.export_root
            )
        except FileExistsError as err:
            self._ask_confirm(typed)
            self._say(f"{err.filename or typed} exists: click 'overwrite' to replace it", refused=True)
            return
        except (PrefauditError, OSError) as err:
            # The person typed a path: say why it is refused, without a traceback.
            self._ask_confirm(None)
            self._say(str(err), refused=True)  # each names the file
            return
        self._ask_confirm(None)
        self._say(f"wrote {len(ids)} pairs to {path}")

    def _overwrite(self) -> None:
        if self._confirm is not None and self._confirm == self.path.value:
            self._export(overwrite=True)

    def _ask_confirm(self, path: str | None) -> None:
        """Show the overwrite button for ``path`` (None: hide it)."""
        self._confirm = path
        self.overwrite_button.layout.display = None if path is not None else "none"

    def _say(self, text: str, *, refused: bool = False) -> None:
        attrs = "class='pa-drivers-refused' style='color:#b00020'" if refused else "class='pa-drivers-said'"
        self.message.value = f"<span {attrs}>{html.escape(text)}</span>"
