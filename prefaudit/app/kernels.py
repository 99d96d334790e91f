"""The kernel manager of ``prefaudit app``: at most ``max_kernels`` live kernels, one per open page.

Every visitor's page gets its own kernel (hundreds of MB to a GB each once the model is loaded).
A closed page's kernel is shut down by the page itself (Voila's ``beforeunload`` beacon) and,
when that never arrives, by jupyter_server's culler (``MappingKernelManager.cull_*``, set by
:func:`~prefaudit.app.serve.voila_settings`). This class adds what neither has:

* a cap: a page asked for beyond ``max_kernels`` gets HTTP 503 saying why, instead of a kernel;
* the ``_xsrf`` cookie on the page's response. Voila 0.5.13 renders its page without one, so
  the beacon (a POST that must carry it) was refused with 403 and every closed tab's kernel
  lived on until the server stopped.

Voila imports it by name (``VoilaConfiguration.multi_kernel_manager_class``); it is the only
module of ``prefaudit.app`` that needs jupyter_server.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.call_context import CallContext
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer

#: The page's heading when the cap is reached (Voila's error page shows the reason phrase only,
#: so it carries the whole message: one ASCII line, no "<").
FULL_REASON = (
    "All {n} pages this app serves at once are open: close another tab of this app "
    "(or wait until an idle one is shut down), then reload this page"
)


class CappedKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager, refusing a new kernel when ``max_kernels`` are live or starting."""

    max_kernels = Integer(
        0,
        config=True,
        help="Most kernels alive at once (one per open page); 0: no limit.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Kernels asked for but not yet registered: counted, so that pages opened together
        # cannot all pass the check before any of their kernels exists.
        self._starting: set[str] = set()

    def live_kernels(self) -> int:
        """Kernels running or being started."""
        return len(set(self.list_kernel_ids()) | self._starting)

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        if self.max_kernels and self.live_kernels() >= self.max_kernels:
            reason = FULL_REASON.format(n=self.max_kernels)
            raise web.HTTPError(503, "%s (prefaudit app --max-kernels).", reason, reason=reason)
        kernel_id = kernel_id or self.new_kernel_id()
        self._starting.add(kernel_id)
        try:
            kernel_id = await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._starting.discard(kernel_id)
        _give_page_its_xsrf_cookie()
        return kernel_id


def _give_page_its_xsrf_cookie() -> None:
    """Set ``_xsrf`` on the response of the page that asked for this kernel (before it is sent).

    The page's unload beacon posts this cookie's value back to ``/voila/api/shutdown/<kernel>``;
    without it jupyter_server refuses the shutdown (the XSRF check) and the kernel lives on.
    """
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    if handler is not None:
        handler.xsrf_token  # noqa: B018 - tornado sets the cookie on first access
