"""Which custom gradient rules block forward-mode differentiation: :func:`forward_mode_safe` and
:func:`require_forward_mode` (re-exported; they read jaxprs, so they live in ``jaxlearn._jaxpr``,
where kernels and landscapes import them from too)."""

from jaxlearn._jaxpr.forward_mode import ForwardModeReport, forward_mode_safe, require_forward_mode

__all__ = ["ForwardModeReport", "forward_mode_safe", "require_forward_mode"]
