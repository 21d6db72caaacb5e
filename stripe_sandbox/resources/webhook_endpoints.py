"""Webhook endpoints: /v1/webhook_endpoints."""

from __future__ import annotations

from urllib.parse import urlparse

from stripe_sandbox import shapes
from stripe_sandbox.context import Call
from stripe_sandbox.errors import invalid
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import LIST_PAGING, Arr, Bool, Metadata, Str
from stripe_sandbox.resources.common import Route, assign, merge_metadata, read
from stripe_sandbox.store import JSON, now

# Stripe allows 16 webhook endpoints per account.
MAX_ENDPOINTS = 16
_SECRET_LENGTH = 32

_CREATE = {
    "url": Str(required=True),
    "enabled_events": Arr(Str(), required=True),
    "description": Str(),
    "metadata": Metadata(),
    "api_version": Str(),
    "connect": Bool(),
}
_UPDATE = {
    "url": Str(nullable=False),
    "enabled_events": Arr(Str()),
    "description": Str(),
    "metadata": Metadata(),
    "disabled": Bool(),
}


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    _check_url(params["url"])
    if not params["enabled_events"]:
        raise invalid("enabled_events must contain at least one event.", param="enabled_events")
    if len(store.webhook_endpoints) >= MAX_ENDPOINTS:
        raise invalid(f"You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints.")
    endpoint = shapes.webhook_endpoint(
        store.new_id("we"), now(), params["url"], params["enabled_events"]
    )
    assign(endpoint, params, ("description", "api_version"))
    merge_metadata(endpoint, params)
    secret = "whsec_" + store.token(_SECRET_LENGTH)
    store.webhook_endpoints[endpoint["id"]] = endpoint
    store.webhook_secrets[endpoint["id"]] = secret
    # Only the create response carries the signing secret, as in Stripe.
    return {**endpoint, "secret": secret}


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("we", id)


def update(call: Call, id: str) -> JSON:
    params = read(call, _UPDATE)
    endpoint = call.store.get("we", id)
    if "url" in params:
        _check_url(params["url"])
    assign(endpoint, params, ("url", "enabled_events", "description"))
    if "disabled" in params:
        endpoint["status"] = "disabled" if params["disabled"] else "enabled"
    merge_metadata(endpoint, params)
    return endpoint


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    call.store.get("we", id)
    del call.store.webhook_endpoints[id]
    call.store.webhook_secrets.pop(id, None)
    return shapes.deleted(id, "webhook_endpoint")


def list_(call: Call) -> JSON:
    params = read(call, LIST_PAGING)
    return paginate(call.store.newest_first("we"), params, "/v1/webhook_endpoints")


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise invalid(f"Invalid URL: {url}", param="url")


ROUTES = [
    Route("POST", "/v1/webhook_endpoints", create),
    Route("GET", "/v1/webhook_endpoints", list_),
    Route("GET", "/v1/webhook_endpoints/{id}", retrieve),
    Route("POST", "/v1/webhook_endpoints/{id}", update),
    Route("DELETE", "/v1/webhook_endpoints/{id}", delete),
]
