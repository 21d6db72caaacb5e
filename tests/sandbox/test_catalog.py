"""Products, prices and customers: CRUD, Stripe's uniqueness rules, paging and search."""

from __future__ import annotations

import pytest
import stripe


def test_products(client: stripe.StripeClient) -> None:
    made = client.v1.products.create(
        {"id": "prod_consulting", "name": "Consulting", "metadata": {"sku": "C-1"}}
    )
    assert made.id == "prod_consulting" and made.active and made.metadata["sku"] == "C-1"
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        client.v1.products.create({"id": "prod_consulting", "name": "Again"})
    assert duplicate.value.code == "resource_already_exists"
    assert duplicate.value.http_status == 400
    updated = client.v1.products.update(
        made.id, {"active": False, "description": "Hours", "metadata": {"sku": "", "x": "1"}}
    )
    assert not updated.active and updated.description == "Hours"
    assert updated.metadata.to_dict() == {"x": "1"}
    cleared = client.v1.products.update(made.id, {"description": ""})
    assert cleared.description is None
    other = client.v1.products.create({"name": "Other"})
    assert [p.id for p in client.v1.products.list({"active": True}).data] == [other.id]
    assert [p.id for p in client.v1.products.list({"ids": [made.id]}).data] == [made.id]
    assert client.v1.products.retrieve(made.id).name == "Consulting"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.products.retrieve("prod_nope")
    assert missing.value.http_status == 404
    assert str(missing.value.user_message) == "No such product: 'prod_nope'"
    with pytest.raises(stripe.InvalidRequestError, match="cannot be unset"):
        client.v1.products.update(made.id, {"name": ""})


def test_price_lookup_keys(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Seat"})
    first = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 1000,
            "currency": "USD",
            "lookup_key": "seat",
            "nickname": "Seat",
            "metadata": {"v": "1"},
        }
    )
    assert first.currency == "usd" and first.unit_amount == 1000
    assert first.type == "one_time" and str(first.unit_amount_decimal) == "1000"
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key") as clash:
        client.v1.prices.create(
            {"product": product.id, "unit_amount": 1200, "currency": "usd", "lookup_key": "seat"}
        )
    assert clash.value.param == "lookup_key"
    second = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 1200,
            "currency": "usd",
            "lookup_key": "seat",
            "transfer_lookup_key": True,
        }
    )
    assert second.lookup_key == "seat"
    assert client.v1.prices.retrieve(first.id).lookup_key is None
    found = client.v1.prices.list({"lookup_keys": ["seat"]}).data
    assert [p.id for p in found] == [second.id]
    client.v1.prices.update(
        first.id, {"lookup_key": "seat", "transfer_lookup_key": True, "active": False}
    )
    assert client.v1.prices.retrieve(second.id).lookup_key is None
    assert [p.id for p in client.v1.prices.list({"active": True}).data] == [second.id]
    assert len(client.v1.prices.list({"product": product.id, "currency": "usd"}).data) == 2
    assert client.v1.prices.list({"currency": "eur"}).data == []
    with pytest.raises(stripe.InvalidRequestError) as no_product:
        client.v1.prices.create({"product": "prod_nope", "unit_amount": 1, "currency": "usd"})
    assert no_product.value.param == "product" and no_product.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as no_amount:
        client.v1.prices.create({"product": product.id, "currency": "usd"})
    assert no_amount.value.code == "parameter_missing"


def test_recurring_and_inactive_prices_cannot_be_invoiced(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Plan"})
    monthly = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 900,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    assert monthly.type == "recurring" and monthly.recurring.interval == "month"
    customer = client.v1.customers.create({"name": "x"})
    with pytest.raises(stripe.InvalidRequestError, match="type=one_time"):
        client.v1.invoice_items.create({"customer": customer.id, "pricing": {"price": monthly.id}})
    retired = client.v1.prices.create(
        {"product": product.id, "unit_amount": 900, "currency": "usd", "active": False}
    )
    with pytest.raises(stripe.InvalidRequestError, match="inactive"):
        client.v1.invoice_items.create({"customer": customer.id, "pricing": {"price": retired.id}})


def test_customers(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        {
            "email": "ada@example.com",
            "name": "Ada",
            "description": "first",
            "metadata": {"tenant": "t1"},
            "invoice_prefix": "ADA1",
        }
    )
    assert customer.invoice_prefix == "ADA1" and customer.next_invoice_sequence == 1
    generated = client.v1.customers.create({"name": "Bob"})
    assert len(generated.invoice_prefix) == 8 and generated.invoice_prefix.isupper()
    updated = client.v1.customers.update(customer.id, {"name": "Ada L."})
    assert updated.name == "Ada L." and updated.email == "ada@example.com"
    listed = client.v1.customers.list({"email": "ada@example.com"}).data
    assert [c.id for c in listed] == [customer.id]
    events = client.v1.events.list({"type": "customer.updated"}).data
    assert events[0].data.previous_attributes.to_dict() == {"name": "Ada"}
    deleted = client.v1.customers.delete(generated.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError, match="Invoice prefix"):
        client.v1.customers.create({"invoice_prefix": "x"})


def test_list_paging_newest_first(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create({"name": str(n)}).id for n in range(25)]
    newest_first = ids[::-1]
    page = client.v1.customers.list()
    assert len(page.data) == 10 and page.has_more and page.url == "/v1/customers"
    assert [c.id for c in page.data] == newest_first[:10]
    after = client.v1.customers.list({"limit": 10, "starting_after": page.data[-1].id})
    assert [c.id for c in after.data] == newest_first[10:20] and after.has_more
    last = client.v1.customers.list({"limit": 10, "starting_after": after.data[-1].id})
    assert [c.id for c in last.data] == newest_first[20:] and not last.has_more
    before = client.v1.customers.list({"limit": 3, "ending_before": newest_first[10]})
    assert [c.id for c in before.data] == newest_first[7:10] and before.has_more
    top = client.v1.customers.list({"limit": 3, "ending_before": newest_first[3]})
    assert [c.id for c in top.data] == newest_first[:3] and not top.has_more
    assert [c.id for c in client.v1.customers.list({"limit": 4}).auto_paging_iter()] == (
        newest_first
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.list({"starting_after": "cus_unknown"})


def test_search(client: stripe.StripeClient) -> None:
    ada = client.v1.customers.create(
        {"email": "ada@example.com", "name": "Ada Lovelace", "metadata": {"tenant": "t1"}}
    )
    bob = client.v1.customers.create(
        {"email": "bob@example.com", "name": "Bob", "metadata": {"tenant": "t1", "vip": "yes"}}
    )
    client.v1.customers.create({"email": "eve@example.com", "metadata": {"tenant": "t2"}})

    def ids(query: str) -> list[str]:
        return [c.id for c in client.v1.customers.search({"query": query}).data]

    assert ids("metadata['tenant']:'t1'") == [bob.id, ada.id]
    assert ids("metadata['tenant']:'t1' AND metadata['vip']:'yes'") == [bob.id]
    assert ids("email:'ada@example.com'") == [ada.id]
    assert ids("name:'Bob' OR email:'ada@example.com'") == [bob.id, ada.id]
    assert ids("name~'Love'") == [ada.id]
    assert ids("-metadata['tenant']:'t2' AND name~'Bob'") == [bob.id]
    result = client.v1.customers.search({"query": "metadata['tenant']:'t1'", "limit": 1})
    assert result.object == "search_result" and result.has_more and result.next_page
    rest = client.v1.customers.search(
        {"query": "metadata['tenant']:'t1'", "limit": 1, "page": result.next_page}
    )
    assert [c.id for c in rest.data] == [ada.id] and rest.next_page is None
    everything = client.v1.customers.search({"query": "email~'example'", "limit": 1})
    assert len(list(everything.auto_paging_iter())) == 3
    with pytest.raises(stripe.InvalidRequestError, match="unable to parse"):
        client.v1.customers.search({"query": "tenant = t1"})
    with pytest.raises(stripe.InvalidRequestError, match="AND and OR"):
        client.v1.customers.search({"query": "name:'a' AND name:'b' OR name:'c'"})


def test_invoice_search_and_list_filters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "x"})
    other = client.v1.customers.create({"name": "y"})
    draft = client.v1.invoices.create({"customer": customer.id, "metadata": {"run": "r1"}})
    opened = client.v1.invoices.create({"customer": customer.id, "metadata": {"run": "r2"}})
    client.v1.invoice_items.create({"customer": customer.id, "invoice": opened.id, "amount": 100})
    client.v1.invoices.finalize_invoice(opened.id)
    client.v1.invoices.create({"customer": other.id})

    def ids(query: str) -> list[str]:
        return [i.id for i in client.v1.invoices.search({"query": query}).data]

    assert ids("metadata['run']:'r1'") == [draft.id]
    assert ids(f"customer:'{customer.id}' AND status:'open'") == [opened.id]
    assert ids("total>50") == [opened.id]
    listed = client.v1.invoices.list({"customer": customer.id, "status": "draft"}).data
    assert [i.id for i in listed] == [draft.id]
    assert len(client.v1.invoices.list({"customer": customer.id}).data) == 2
