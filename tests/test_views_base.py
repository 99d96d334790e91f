"""Notebook views at the Python level: the base class (kwargs, errors, observers, closing).

``widget.get_state()`` / ``set_state({...})`` is exactly what a comm update does, and a plotly
click or lasso is simulated through the FigureWidget's JS→Python trait
(``_js2py_pointsCallback``), so these tests exercise the same paths as a browser. Shared parts:
``tests/views_fixtures.py``.
"""

from __future__ import annotations

import pytest

import prefaudit as pa
from prefaudit.views import Dashboard, PairsView, SessionView, ShaperView, VolcanoView
from tests import views_fixtures
from tests.views_fixtures import IMG

session = views_fixtures.session  # shared fixtures


# ---------------------------------------------------------------------- base class
@pytest.mark.parametrize("cls", [VolcanoView, PairsView, ShaperView, Dashboard])
def test_views_reject_unknown_kwargs_with_a_suggestion(session, cls):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cls(session, colour="red")
    if cls is VolcanoView:
        with pytest.raises(TypeError, match="did you mean 'effect'"):
            cls(session, efect="d_z")


def test_session_delegation_passes_kwargs_and_rejects_typos(session):
    assert isinstance(session.volcano(effect="rank_biserial"), VolcanoView)
    assert isinstance(session.drilldown("url", sort="chosen"), PairsView)
    assert isinstance(session.shaper(), ShaperView)
    assert isinstance(session.dashboard(page_size=3), Dashboard)
    with pytest.raises(TypeError, match="page_sise"):
        session.drilldown(page_sise=3)


def test_view_needs_a_session():
    with pytest.raises(TypeError, match="AuditSession"):
        ShaperView(object())


def test_callback_error_is_shown_in_the_view_escaped_and_dismissable(session):
    view = ShaperView(session)
    view.add_box.value = f"nope{IMG}"  # not a feature: the intent raises ConfigError
    assert isinstance(view.last_error, pa.ConfigError)
    assert view._error_box.layout.display == "flex"
    assert "ConfigError" in view._error_html.value and "traceback" in view._error_html.value
    assert IMG not in view._error_html.value and "&lt;img" in view._error_html.value
    view.clear_error()
    assert view.last_error is None and view._error_box.layout.display == "none"


def test_observer_errors_stay_in_the_view_and_do_not_break_the_intent(session):
    class Broken(SessionView):
        def __init__(self, session, **kwargs):
            super().__init__(session, **kwargs)
            self.observe_session(self._boom, "selection")

        def _boom(self, change):
            raise RuntimeError("redraw failed")

    view = Broken(session)
    session.select_feature("concept:url")  # must not raise in the caller
    assert session.selection == ["concept:url"]
    assert isinstance(view.last_error, RuntimeError)


def test_close_stops_observing_the_session(session):
    notifiers = session._trait_notifiers
    before = {k: len(v.get("change", [])) for k, v in notifiers.items()}
    view = Dashboard(session)
    assert len(notifiers["selection"]["change"]) > before.get("selection", 0)
    view.close()
    after = {k: len(v.get("change", [])) for k, v in notifiers.items()}
    assert after == {k: before.get(k, 0) for k in after}
    session.select_feature("concept:url")  # nothing observes a closed view any more
