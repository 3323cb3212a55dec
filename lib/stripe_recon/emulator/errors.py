"""Stripe-shaped API errors: ``{"error": {"type", "code", "message", "param"}}`` with an HTTP status."""

from __future__ import annotations

from typing import Any


class StripeAPIError(Exception):
    """An error answered to the client as Stripe would (status + error body)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"https://docs.stripe.com/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        if request_id:
            err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": err}


def missing(resource: str, object_id: str, param: str = "id") -> StripeAPIError:
    """404 ``resource_missing`` as Stripe words it: ``No such product: 'prod_x'``."""
    return StripeAPIError(404, f"No such {resource}: '{object_id}'", code="resource_missing", param=param)


def unknown_param(name: str, hint: str = "") -> StripeAPIError:
    msg = f"Received unknown parameter: {name}"
    return StripeAPIError(400, msg + (f". {hint}" if hint else ""), code="parameter_unknown", param=name)


def invalid(param: str, message: str, code: str = "parameter_invalid_empty") -> StripeAPIError:
    return StripeAPIError(400, message, code=code, param=param)


def bad_value(param: str, message: str) -> StripeAPIError:
    return StripeAPIError(400, message, code="parameter_invalid_string", param=param)
