"""``SessionView``: the base of every notebook view (volcano, drill-down, shaper, run panel, ...).

A view is an ``ipywidgets.VBox`` bound to one audit: a :class:`~prefaudit.audit.core.AuditCore`
(an :class:`~prefaudit.session.AuditSession` is one). It

* **rejects unknown keyword arguments** with a message that lists the accepted ones (ipywidgets
  would otherwise swallow a typo like ``efect="q"`` silently);
* **shows callback errors in the notebook**: wrap every UI callback and session observer with
  :meth:`SessionView.guard` (or register observers with :meth:`SessionView.observe_session`).
  An exception then appears in a red box at the top of the view (message plus a collapsible
  traceback) instead of disappearing into the browser console or the kernel log;
* **observes the session, never echoes**: views call intents on the session (``select_feature``,
  ``set_weight``, ...) and redraw from its traits. Observers registered through
  :meth:`observe_session` are removed by :meth:`close`.

Writing a view
--------------
>>> import ipywidgets as w
>>> from prefaudit.views.base import SessionView
>>> class StatusView(SessionView):
...     css_class = "prefaudit-status"
...
...     def __init__(self, session, *, prefix: str = "status: ", **kwargs):
...         super().__init__(session, **kwargs)      # raises TypeError on unknown kwargs
...         self.prefix = prefix
...         self.text = w.Label()
...         self.set_body(self.text)
...         self.observe_session(self._redraw, "status")
...         self._redraw()
...
...     def _redraw(self, change=None):
...         self.text.value = self.prefix + self.session.status
"""

from __future__ import annotations

import difflib
import functools
import html
import inspect
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import ipywidgets as w

log = logging.getLogger("prefaudit.views")
#: Set in the kernels of ``prefaudit app`` (``prefaudit.app.config.CONFIG_ENV``; views sit below
#: the app in the import graph, so the name is repeated here): callback errors then show no traceback.
SERVED_ENV = "PREFAUDIT_APP_CONFIG"

__all__ = ["SessionView", "check_session"]


def check_session(session: Any) -> Any:
    """Return ``session`` if it is an audit (an :class:`~prefaudit.audit.core.AuditCore`, such as
    an ``AuditSession``), else raise a ``TypeError`` that says so.

    Views need only the core's traits and intents, never the session facade.
    """
    from ..audit.core import AuditCore  # here, not at the top: views load without the session

    if not isinstance(session, AuditCore):
        raise TypeError(f"A view needs a prefaudit AuditSession, not {type(session).__name__}.")
    return session


def _close_tree(widget: w.Widget) -> None:
    """Close a widget and everything inside it (``Box.close`` leaves its children open)."""
    if isinstance(widget, SessionView):
        widget.close()  # closes its own subtree and stops observing
        return
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


class SessionView(w.VBox):
    """Base class of prefaudit's views: one ``VBox`` observing one session.

    Parameters
    ----------
    session : AuditSession
        The session that owns all state the view shows.
    layout : ipywidgets.Layout or dict, optional
        The only widget option passed through (size, margins).

    Attributes
    ----------
    session : AuditSession
    last_error : BaseException or None
        The most recent exception raised inside a guarded callback (also shown in the view).
    """

    #: CSS class put on the root element (the DOM hook browser tests and CSS rely on).
    css_class: ClassVar[str] = ""

    def __init__(self, session: Any, **kwargs: Any) -> None:
        layout = kwargs.pop("layout", None)
        if kwargs:
            raise TypeError(self._unknown_kwargs_message(kwargs))
        super().__init__(**({"layout": layout} if layout is not None else {}))
        self.session = check_session(session)
        self.last_error: BaseException | None = None
        self._session_observers: list[tuple[Callable[[Any], None], tuple[str, ...]]] = []
        self._error_html = w.HTML()
        self._error_html.add_class("pa-error-text")
        dismiss = w.Button(description="dismiss", layout=w.Layout(width="auto"))
        dismiss.on_click(lambda _b: self.clear_error())
        self._error_box = w.HBox([self._error_html, dismiss], layout=w.Layout(display="none"))
        self._error_box.add_class("pa-error")
        self.add_class("prefaudit-view")
        if self.css_class:
            self.add_class(self.css_class)
        self.children = (self._error_box,)

    # ------------------------------------------------------------------ composition
    def set_body(self, *widgets: w.Widget) -> None:
        """Set the view's content (the error box always stays first)."""
        self.children = (self._error_box, *widgets)

    # ------------------------------------------------------------------ errors
    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a callback so that an exception is shown in the view instead of being lost."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                self.show_error(err)
                return None

        return wrapper

    def show_error(self, err: BaseException) -> None:
        """Display an exception (escaped: messages may quote dataset text) and log it."""
        self.last_error = err
        message = f"<b>{html.escape(type(err).__name__)}</b>: {html.escape(str(err))}"
        if os.environ.get(SERVED_ENV):
            # Served to visitors by `prefaudit app`: like Jupyter Server, no traceback reaches the
            # page; it goes to the app's log instead.
            log.warning("%s: callback failed", type(self).__name__, exc_info=err)
            self._error_html.value = message
        else:
            log.debug("%s: callback failed", type(self).__name__, exc_info=err)  # the view shows it
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self._error_html.value = (
                f"{message}<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>"
            )
        self._error_box.layout.display = "flex"

    def clear_error(self) -> None:
        self.last_error = None
        self._error_html.value = ""
        self._error_box.layout.display = "none"

    # ------------------------------------------------------------------ session observers
    def observe_session(self, handler: Callable[[Any], None], *names: str) -> None:
        """Observe session traits with a guarded handler that :meth:`close` removes again."""
        guarded = self.guard(handler)
        self.session.observe(guarded, names=list(names))
        self._session_observers.append((guarded, names))

    def close(self) -> None:
        """Stop observing the session and close the widget (and its children)."""
        # getattr: ipywidgets calls close() from __del__, also on a view whose __init__ raised.
        for handler, names in getattr(self, "_session_observers", []):
            self.session.unobserve(handler, names=list(names))
        self._session_observers = []
        for child in getattr(self, "children", ()):
            _close_tree(child)
        super().close()

    # ------------------------------------------------------------------ kwargs
    def _unknown_kwargs_message(self, kwargs: dict[str, Any]) -> str:
        params = inspect.signature(type(self).__init__).parameters
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        accepted = sorted(
            {n for n, p in params.items() if p.kind in kinds and n not in ("self", "session")} | {"layout"}
        )
        parts = []
        for name in kwargs:
            close = difflib.get_close_matches(name, accepted, n=1)
            parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (
            f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(parts)}. "
            f"Accepted: {', '.join(accepted)}."
        )
